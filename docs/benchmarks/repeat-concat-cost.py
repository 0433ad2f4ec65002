"""Does Repeat-and-Concatenate's training cost see what its PSNR sees? (issue 14, point 4)

repeat-concat-2v stays below the mean-CT baseline. One guess was that its cost
(the de-biased Sinkhorn divergence between unit-normalised features of a random
3D CNN, each sample one point) cannot see intensity at batch 1, where it is
half the squared feature distance. This script scores, with the method's own
cost (``SinkhornFeatureCost`` at its paper settings) and with the voxel L1 error:

1. edits of one training pseudo-patient against itself (intensity scaled or
   shifted, soft tissue set to air, ...), which says what the cost penalises;
2. the shipped model's prediction and the mean of the other pseudo-patients
   (the mean-CT baseline) on six training pseudo-patients.

    .venv/bin/python docs/benchmarks/repeat-concat-cost.py > docs/benchmarks/repeat-concat-cost.md
"""

import datetime

import torch

from x2ct import inference
from x2ct.benchmarks.training import _spec, benchmark_config
from x2ct.losses.optimal_transport import SinkhornFeatureCost
from x2ct.training import config as configs
from x2ct.training import data

CASES = 6
SOFT_TISSUE_HU = (-200.0, 200.0)


def training_cases(count: int) -> list[dict]:
    """The first ``count`` training pseudo-patients of repeat-concat's small preset (64^3, values in [0, 1])."""
    settings = benchmark_config("repeat-concat", "small").to_dict()
    settings["data"]["train_count"] = count
    train, _ = data.make(configs.from_dict(settings), _spec("repeat-concat", "small"))
    return [train[i] for i in range(count)]


def main() -> None:
    torch.manual_seed(0)
    cost = SinkhornFeatureCost()
    cases = training_cases(CASES)
    cts = torch.stack([case["ct"] for case in cases])
    gt = cts[:1]
    low, high = (float(v) for v in cases[0]["hu_range"])  # the HU that map to 0 and 1
    soft_tissue = (gt > (SOFT_TISSUE_HU[0] - low) / (high - low)) & (gt < (SOFT_TISSUE_HU[1] - low) / (high - low))
    edits = {
        "the ground truth + N(0, 0.001) noise": gt + 1e-3 * torch.randn_like(gt),
        "x 0.8": gt * 0.8, "x 0.5": gt * 0.5, "+ 0.1": (gt + 0.1).clamp(0, 1),
        f"soft tissue ({SOFT_TISSUE_HU[0]:g} to {SOFT_TISSUE_HU[1]:g} HU) set to 0": torch.where(
            soft_tissue, torch.zeros_like(gt), gt),
        "the mean of pseudo-patients 2-6": cts[1:].mean(0, keepdim=True),
        "another pseudo-patient": cts[1:2], "all 0": torch.zeros_like(gt), "all 0.3": torch.full_like(gt, 0.3),
    }
    print(f"# Repeat-and-Concatenate: its transport cost against the voxel error\n\n"
          f"Made by `.venv/bin/python docs/benchmarks/repeat-concat-cost.py` on {datetime.date.today()}, "
          "which says why (its docstring). The cost is `SinkhornFeatureCost` at the paper's settings (weight 0.1 "
          "included), batch 1; volumes are 64^3 in the protocol's [0, 1] scale "
          f"({low:g} to {high:g} HU for pseudo-patient 1).\n")
    print("## 1. Edits of training pseudo-patient 1, scored against it\n")
    print("| prediction | Sinkhorn feature cost | voxel L1 |\n|---|---:|---:|")
    with torch.no_grad():
        for name, prediction in edits.items():
            error = float((prediction - gt).abs().mean())
            print(f"| {name} | {float(cost(prediction, gt).detach()):.1f} | {error:.4f} |")
        model = inference.load("repeat-concat-2v", "cpu").model.eval()
        print("\n## 2. The shipped repeat-concat-2v and the mean of the others, on training pseudo-patients\n")
        print("| pseudo-patient | cost: model | cost: mean of the others | L1: model | L1: mean of the others |\n"
              "|---|---:|---:|---:|---:|")
        totals = torch.zeros(4)
        for index, case in enumerate(cases):
            truth = case["ct"][None]
            prediction = model(case["views"][None], case["angles"][None]).detach().clamp(0, 1)
            mean = torch.cat([cts[:index], cts[index + 1:]]).mean(0, keepdim=True)
            row = torch.tensor([float(cost(prediction, truth).detach()), float(cost(mean, truth).detach()),
                                float((prediction - truth).abs().mean()), float((mean - truth).abs().mean())])
            totals += row / len(cases)
            print(f"| {index + 1} | {row[0]:.1f} | {row[1]:.1f} | {row[2]:.4f} | {row[3]:.4f} |")
        print(f"| mean | {totals[0]:.1f} | {totals[1]:.1f} | {totals[2]:.4f} | {totals[3]:.4f} |")


if __name__ == "__main__":
    main()
