"""Import the X2CT-GAN authors' released generators into the ``x2ct-gan`` paper preset.

Ying et al. released LIDC-IDRI-trained generators beside their code
(github.com/kylekma/X2CT, GPLv3): ``multiView_CTGAN`` checkpoint 90 (two
views) and ``singleView_CTGAN`` checkpoint 30 (one view), PyTorch files
``{epoch}_net_G.pth`` holding ``{"iters", "epoch", "state_dict", "lr"}``.

The file is read with ``torch.load(weights_only=True)`` only: a pickle that
would build Python objects is refused, never run. Every tensor of the
authors' generator is accounted for exactly once, by one of these rules:

* **mapped**: a weight copied onto our parameter of the same shape; the
  per-view 3D kernels (connection B, the view decoders) and connection A's
  output rows are permuted from the authors' view frame into the CT frame
  (their ``CTOrder_Xray1 = [0,1,3,2,4]``, ``CTOrder_Xray2 = [0,1,4,2,3]``),
  which is exact because every 3D layer treats the three axes alike;
* **cancelled**: the bias of a conv followed by an InstanceNorm without
  affine parameters (a per-channel constant the norm removes exactly);
* **folded**: the biases of the last encoder stage (its stride-2 conv and its
  dense layers' output convs), which reach connection A through the average
  pool, are added to connection A's bias through its weight (exact);
* **norm statistics**: InstanceNorm running mean/var (the authors' test puts
  InstanceNorm in training mode, so they never change the output);
* **unused by the fused output** (two views only): each view's own finest
  decoder step and output head, which feed the authors' per-view outputs
  that their test discards.

A missing key, an extra key or a wrong shape is refused with its name. The
result is written through ``x2ct.catalog.import_model`` (sha256 and card
checks) as a safetensors model with a card naming the source and terms.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
import shutil
import tempfile
from pathlib import Path

import torch

from x2ct.errors import InputError

#: The authors' view orders (``CTGAN.CTOrder_Xray1/2``) as permutations of the spatial axes: CT = view.permute.
VIEW_TO_CT = {0: (1, 0, 2), 1: (1, 2, 0)}

SOURCE = "X2CT-GAN authors (Ying et al., CVPR 2019), github.com/kylekma/X2CT"
CHECKPOINTS = {2: "multiView_CTGAN, checkpoint 90 (90_net_G.pth; configuration "
                  "multiview_network_denseUNetFuse_transposed)",
               1: "singleView_CTGAN, checkpoint 30 (30_net_G.pth; configuration "
                  "singleview_network_denseUNet_transposed)"}
LICENCE = ("Code: GPLv3 (kylekma/X2CT LICENSE). Weights: the authors state no separate licence; they are "
           "distributed through the README's Dropbox/Weiyun links beside the GPLv3 code, so at most GPLv3 terms "
           "can be assumed: ask the authors before redistributing them. Training data: LIDC-IDRI (The Cancer "
           "Imaging Archive), under TCIA's data usage terms (cite LIDC-IDRI and TCIA).")
TRAINING_DATA = ("LIDC-IDRI: the authors' split of 916 training CTs (102 test CTs), DRRs from Plastimatch "
                 "(X2CT protocol); not retrained or checked here")
INPUT_PROTOCOL = ("X2CT DRR normalisation: raw line integrals (no exponential), each image divided by its own "
                  "maximum, x255, resized to 128x128, /255 (x2ct protocol 'x2ct'); frontal PA at 0 degrees and "
                  "left lateral at 90 degrees; output [0,1] = clip(HU + 1024, 0, 2500) / 2500 on a 128^3 grid "
                  "(docs: methods.md, common data protocol). Real radiographs are outside this protocol. Their "
                  "network, like ours, lifts image column j onto CT column j for both views; that their LIDC DRRs "
                  "(PA flipped left-right by their CT2XRAY code) share our display orientation is assumed, not "
                  "checked (no LIDC data here).")
PUBLISHED = "26.19 dB PSNR, 0.656 SSIM on the LIDC-IDRI test split, X2CT convention (reported in the paper, two views)"


@dataclasses.dataclass(frozen=True)
class Rule:
    """What happens to one of the authors' keys."""

    kind: str  # mapped, cancelled, folded, statistic, unused
    shape: tuple[int, ...]
    target: str | None = None  # our key (mapped) or None
    permute: tuple[int, ...] | None = None  # spatial permutation view -> CT (mapped 3D kernels / connection A rows)
    fold_slice: tuple[int, int] | None = None  # channels of connection A's input this bias adds to (folded)
    fold_into: str | None = None  # connection A's linear layer (folded)
    optional: bool = False  # InstanceNorm statistics: absent from some checkpoints


def load_checkpoint(path) -> dict[str, torch.Tensor]:
    """The generator's state dict from an authors' checkpoint, read without unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"No checkpoint file at {path}; give the authors' {{epoch}}_net_G.pth file.")
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if found:
            raise InputError(f"{path} asks to run Python code when read ({found.group(1)}), so it is refused unread; "
                             "only plain state-dict checkpoints (tensors, numbers, strings) are imported.") from None
        raise InputError(f"{path} is not a readable PyTorch checkpoint (the weights-only reader stopped: "
                         f"{_last_reason(error)}).") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, KeyError) as error:
        raise InputError(f"{path} is not a readable PyTorch checkpoint ({type(error).__name__}: "
                         f"{_last_reason(error)}).") from None
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path} holds no state dict of tensors (expected the authors' {{'state_dict': ...}} "
                         "generator checkpoint).")
    if all(key.startswith("module.") for key in state):  # saved from a DataParallel wrapper
        state = {key[len("module."):]: value for key, value in state.items()}
    return state


def _last_reason(error: Exception) -> str:
    """The informative line of a torch.load error (its last non-empty line but the docs link)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip() and "documentation" not in line]
    return (lines[-1] if lines else type(error).__name__)[:200]


def authors_layout(n_views: int, model) -> dict[str, Rule]:
    """Every key of the authors' generator matching our paper-preset ``model``, with its rule."""
    if n_views not in (1, 2):
        raise InputError(f"The authors released one-view and two-view generators; got {n_views} views.")
    layout = _Layout(model)
    fused = n_views > 1
    levels = len(model.branches[0].encoder.stages)
    for v, branch in enumerate(model.branches):
        p, b, perm = (f"view{v + 1}Model." if fused else ""), f"branches.{v}.", VIEW_TO_CT[v]
        layout.conv_norm(f"{p}encoder_layer.1", f"{p}encoder_layer.2", f"{b}encoder.stem.0")
        for s, stage in enumerate(branch.encoder.stages):
            last, c = s == levels - 1, branch.encoder.channels[s]
            mine = f"{b}encoder.stages.{s}"
            growth = layout.ours[f"{mine}.1.denselayer1.layers.conv2.weight"][0]
            layout.statistics(f"{p}encoder_layer{s}.0", c)
            fold = f"{b}connection_a.1" if last else None
            layout.conv(f"{p}encoder_layer{s}.2", f"{mine}.0.2", fold=fold and (fold, 0, c))
            for i in range(len(stage[1])):
                theirs, dense = f"{p}encoder_layer{s}.3.conv_block.{i}", f"{mine}.1.denselayer{i + 1}.layers"
                start = c + i * growth
                layout.statistics(f"{theirs}.norm1", start)
                layout.conv_norm(f"{theirs}.conv1", f"{theirs}.norm2", f"{dense}.conv1")
                layout.conv(f"{theirs}.conv2", f"{dense}.conv2", fold=fold and (fold, start, start + growth))
            if not last:
                layout.statistics(f"{p}encoder_layer{s}.4", c + len(stage[1]) * growth)
                layout.conv(f"{p}encoder_layer{s}.6", f"{mine}.2.2")
        layout.linear(f"{p}base_link.0", f"{b}connection_a.1", perm)
        for k in range(levels):
            theirs, mine = f"{p}linker_layer{k}.0", f"{b}connection_b.{k}"
            layout.conv_norm(f"{theirs}.compress_block.0", f"{theirs}.compress_block.1", f"{mine}.compress.0")
            layout.conv_norm(f"{theirs}.conv_block.0", f"{theirs}.conv_block.1", f"{mine}.conv.conv", perm)
        layout.decoder(p, f"{b}merge", f"{b}steps", branch.steps, levels, perm, separate_merge=fused)
    if fused:
        layout.decoder("", "fused_merge", "fused_steps", {str(k): s for k, s in enumerate(model.fused_steps)},
                       levels, None, separate_merge=False)
        d0 = layout.ours["head.0.weight"][1]
        for v in range(n_views):  # each view's finest step and head: only the authors' per-view outputs read them
            p = f"view{v + 1}Model."
            layout.unused(f"{p}decoder_layer-1.0", (d0, d0, 3, 3, 3))
            layout.statistics(f"{p}decoder_layer-1.1", d0)
            layout.unused(f"{p}decoder_layer.0", (1, d0, 7, 7, 7))
    # the output head: in the CT frame after the fusion; in the view's frame in the one-view network
    head_permute = None if fused else VIEW_TO_CT[0]
    layout.rules["decoder_layer.0.weight"] = Rule("mapped", layout.ours["head.0.weight"], "head.0.weight", head_permute)
    layout.rules["decoder_layer.0.bias"] = Rule("mapped", layout.ours["head.0.bias"], "head.0.bias")
    return layout.rules


class _Layout:
    """Collects the rules of the authors' keys against our model's parameter shapes."""

    def __init__(self, model):
        self.ours = {key: tuple(value.shape) for key, value in model.state_dict().items()}
        self.rules: dict[str, Rule] = {}

    def statistics(self, norm: str, channels: int) -> None:
        for name in ("running_mean", "running_var"):
            self.rules[f"{norm}.{name}"] = Rule("statistic", (channels,), optional=True)
        self.rules[f"{norm}.num_batches_tracked"] = Rule("statistic", (), optional=True)

    def conv(self, theirs: str, mine: str, permute=None, fold=None, transposed: bool = False) -> int:
        """A conv whose bias an InstanceNorm cancels; returns its output channels.

        ``fold`` = (connection A's layer, first, end channel): the bias reaches
        connection A's input channels [first, end) through the average pool instead.
        """
        shape = self.ours[f"{mine}.weight"]
        self.rules[f"{theirs}.weight"] = Rule("mapped", shape, f"{mine}.weight", permute)
        out = shape[1] if transposed else shape[0]
        self.rules[f"{theirs}.bias"] = (Rule("folded", (out,), fold_into=fold[0], fold_slice=fold[1:]) if fold
                                        else Rule("cancelled", (out,)))
        return out

    def conv_norm(self, theirs: str, norm: str, mine: str, permute=None, transposed: bool = False) -> None:
        self.statistics(norm, self.conv(theirs, mine, permute, transposed=transposed))

    def linear(self, theirs: str, mine: str, permute) -> None:
        """Connection A: weight and bias map, their rows (C, s, s, s) permuted into the CT frame."""
        for name in ("weight", "bias"):
            self.rules[f"{theirs}.{name}"] = Rule("mapped", self.ours[f"{mine}.{name}"], f"{mine}.{name}", permute)

    def unused(self, theirs: str, shape: tuple[int, ...]) -> None:
        self.rules[f"{theirs}.weight"] = Rule("unused", shape)
        self.rules[f"{theirs}.bias"] = Rule("unused", (shape[0],))

    def decoder(self, p: str, merge: str, steps: str, modules, levels: int, permute, separate_merge: bool) -> None:
        """One decoder, coarse (k = levels, from connection A) to fine (k = 0).

        The authors' ``decoder_layer{k-1}`` holds our step k; the merge conv
        (ours ``merge[k]``) is its first layer, or its own
        ``decoder_compress_layer{k-1}`` in a two-view model's view branches.
        """
        for k in range(levels, -1, -1):
            theirs, offset = f"{p}decoder_layer{k - 1}", 0
            if k < levels:
                where = f"{p}decoder_compress_layer{k - 1}" if separate_merge else theirs
                self.conv_norm(f"{where}.0", f"{where}.1", f"{merge}.{k}.conv", permute)
                offset = 0 if separate_merge else 3
            if str(k) not in modules:
                continue  # a fused model's view branch has no finest step (listed as unused)
            n_convs = len(modules[str(k)]) - (1 if k > 0 else 0)
            for j in range(n_convs):
                at = offset + 3 * j
                self.conv_norm(f"{theirs}.{at}", f"{theirs}.{at + 1}", f"{steps}.{k}.{j}.conv", permute)
            if k > 0:
                up = f"{theirs}.{offset + 3 * n_convs}.block.block"
                self.conv_norm(f"{up}.0", f"{up}.1", f"{steps}.{k}.{n_convs}.conv", permute, transposed=True)


def convert(state: dict[str, torch.Tensor], n_views: int, model) -> dict[str, torch.Tensor]:
    """The authors' state dict as ours (for ``model``), after checking every key and shape is used exactly once."""
    rules = authors_layout(n_views, model)
    kind = f"the authors' {n_views}-view generator"
    hint = (f"check --views ({n_views} given; the two-view file is multiView_CTGAN 90_net_G.pth, the one-view file "
            "singleView_CTGAN 30_net_G.pth)")
    extra = sorted(set(state) - set(rules))
    if extra:
        raise InputError(f"The checkpoint has {len(extra)} key(s) that {kind} does not, e.g. {extra[0]!r}; {hint}.")
    missing = sorted(key for key, rule in rules.items() if not rule.optional and key not in state)
    if missing:
        raise InputError(f"The checkpoint lacks {len(missing)} key(s) of {kind}, e.g. {missing[0]!r}; {hint}.")
    for key, tensor in state.items():
        if tuple(tensor.shape) != rules[key].shape:
            raise InputError(f"The checkpoint's {key!r} has shape {tuple(tensor.shape)}, {kind} has "
                             f"{rules[key].shape}; it is another network or a damaged file.")
        if rules[key].kind in ("mapped", "folded") and not tensor.is_floating_point():
            raise InputError(f"The checkpoint's {key!r} holds {tensor.dtype} values, not floating-point weights.")
    begin = model.branches[0].begin
    ours = {rule.target: _to_ct(state[key].float(), rule.permute, begin)
            for key, rule in rules.items() if rule.kind == "mapped"}
    for key, rule in rules.items():
        if rule.kind == "folded":
            weight = ours[f"{rule.fold_into}.weight"].double()
            first, end = rule.fold_slice
            shift = weight[:, first:end] @ state[key].double()
            ours[f"{rule.fold_into}.bias"] = (ours[f"{rule.fold_into}.bias"].double() + shift).float()
    for key, tensor in ours.items():
        if not torch.isfinite(tensor).all():
            raise InputError(f"The checkpoint's weights for {key!r} hold NaN or Inf values; refusing them.")
    return ours


def _to_ct(tensor: torch.Tensor, permute, begin: int) -> torch.Tensor:
    """A view-frame tensor in the CT frame: 3D kernels permuted; connection A's rows (C, s, s, s) permuted."""
    if permute is None:
        return tensor.contiguous()
    axes = [a + 2 for a in permute]
    if tensor.ndim == 5:  # (out, in, d, h, w) or, transposed, (in, out, d, h, w)
        return tensor.permute(0, 1, *axes).contiguous()
    rows = tensor.shape[0]
    cube = tensor.reshape(rows // begin**3, begin, begin, begin, *tensor.shape[1:])
    return cube.permute(0, *[a - 1 for a in axes], *range(4, cube.ndim)).reshape(tensor.shape).contiguous()


def import_published(path, n_views: int | None = None, model_id: str | None = None, overwrite: bool = False):
    """Import an authors' checkpoint as a catalog model (safetensors + card); return its catalog entry.

    ``n_views`` None: two views when the file has the two-view network's ``view1Model.`` keys, else one.
    """
    from x2ct import catalog
    from x2ct.checksum import sha256_file
    from x2ct.modelfile import save_model
    from x2ct.models import build

    if n_views is not None and n_views not in CHECKPOINTS:
        raise InputError(f"--views must be 1 or 2 (the authors released one-view and two-view generators), "
                         f"got {n_views}.")
    state = load_checkpoint(path)
    if n_views is None:
        n_views = 2 if any(key.startswith("view1Model.") for key in state) else 1
    model = build("x2ct-gan", "paper", n_views=n_views)
    model.load_state_dict(convert(state, n_views, model), strict=True)
    rules = authors_layout(n_views, model)
    present: dict[str, int] = {}
    for key in state:
        present[rules[key].kind] = present.get(rules[key].kind, 0) + 1
    card = {
        "description": f"X2CT-GAN, the authors' LIDC-IDRI-trained {n_views}-view generator "
                       f"({CHECKPOINTS[n_views].split(' (')[0]}), imported. Published: {PUBLISHED}.",
        "source": f"{SOURCE}: {CHECKPOINTS[n_views]}",
        "source_file": Path(path).name,
        "source_sha256": sha256_file(path),
        "licence": LICENCE,
        "training_data": TRAINING_DATA,
        "input_protocol": INPUT_PROTOCOL,
        "intended_use": "research use only; not for diagnosis",
        "import_rules": {kind: f"{present[kind]} key(s)" for kind in sorted(present)},
    }
    parent = catalog.user_folder().parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".x2ct-gan-import.", dir=parent))
    try:
        folder = staging / (model_id or f"x2ct-gan-lidc-{n_views}v")
        save_model(model, folder, card)
        return catalog.import_model(folder, model_id or folder.name, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
