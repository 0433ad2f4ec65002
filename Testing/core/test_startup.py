"""x2ct's own processes import MONAI without the optional packages it would pull in and x2ct never uses."""

import subprocess
import sys

OPTIONAL_HERE = ("matplotlib", "scipy.signal", "sklearn", "skimage")  # installed with the test extras
IMPORTED = f"sorted(n for n in {OPTIONAL_HERE!r} if n in sys.modules)"
TRIMMED = "from x2ct.startup import skip_unused_optional_imports\nskip_unused_optional_imports()\n"


def _last_line(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", "import sys\n" + code], capture_output=True, text=True,
                          timeout=120, check=True)
    return done.stdout.strip().splitlines()[-1]


def test_monai_pulls_them_in_a_plain_process_and_not_in_an_x2ct_one():
    assert _last_line(f"import monai.networks.blocks\nprint({IMPORTED})") != "[]"  # the test can fail
    assert _last_line(f"{TRIMMED}import monai.networks.blocks\nprint({IMPORTED})") == "[]"


def test_they_look_not_installed_so_libraries_that_look_for_them_still_work():
    code = (f"{TRIMMED}import torch\nfrom x2ct.models import build\n"
            "model = build('repeat-concat', 'tiny').eval()\n"  # SwinUNETR: einops picks backends by sys.modules
            "with torch.no_grad():\n"
            "    volume = model(torch.rand(1, 2, 32, 32), torch.tensor([[0.0, 90.0]]))\n"
            "try:\n    import matplotlib\nexcept ModuleNotFoundError as error:\n    missing = error.name\n"
            "print(tuple(volume.shape), missing, 'cupy' in sys.modules)")
    assert _last_line(code) == "(1, 1, 32, 32, 32) matplotlib False"


def test_the_x2ct_entry_point_trims_start_up_before_running_the_command():
    assert _last_line("import x2ct.__main__ as entry\nsys.argv = ['x2ct', 'catalog', 'list']\ncode = entry.main()\n"
                      f"import monai.networks.blocks\nprint(code, {IMPORTED})") == "0 []"
