"""``featcodec eval equivariance``: Lenc & Vedaldi's equivariance maps, layer by layer.

featcodec eval equivariance --task-checkpoint runs/demo/tasknet.ckpt --out runs/equivariance
featcodec eval equivariance --image photo.jpg [--weights-file resnet34.pth] --out runs/eq-photo
"""

from __future__ import annotations

import argparse
from pathlib import Path

from featcodec.cli.common import set_threads, threads_arg
from featcodec.codec.errors import InputError

# as eval.equivariance's defaults (not imported here: --help must not load torch)
LAYERS = ("maxpool", "layer1", "layer2", "layer3", "layer4")
TRANSFORMATIONS = ("hflip", "vflip", "rot90", "scale1.25", "affine")
DEMO_TASK_CHECKPOINTS = "runs/demo*/tasknet.ckpt"


def newest_demo_checkpoint() -> Path | None:
    """The task network of the newest ``make demo`` run, if there is one."""
    found = sorted(Path().glob(DEMO_TASK_CHECKPOINTS), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def add_parser(ev_sub: argparse._SubParsersAction) -> None:
    """The ``equivariance`` subcommand of ``featcodec eval``."""
    eq = ev_sub.add_parser(
        "equivariance",
        help="how each layer reflects flips, rotations, scaling, affines (Lenc & Vedaldi)",
    )
    eq.add_argument(
        "--task-checkpoint",
        help="trained task network, run on the synthetic scenes (default: the newest "
        f"{DEMO_TASK_CHECKPOINTS}, written by make demo)",
    )
    eq.add_argument("--image", help="a photo instead: random crops through --backbone")
    eq.add_argument("--backbone", default="resnet34", help="with --image")
    eq.add_argument("--weights-file", help="with --image: a state_dict of the backbone")
    eq.add_argument(
        "--layers",
        nargs="+",
        help=f"split points (default: those of {', '.join(LAYERS)} whose stride divides the "
        "image size)",
    )
    eq.add_argument(
        "--transformations",
        nargs="+",
        metavar="G",
        help=f"of {', '.join(TRANSFORMATIONS)} (default: all)",
    )
    eq.add_argument(
        "--kernels", nargs="+", type=int, default=[1, 3], help="filter-bank sizes (1: paper)"
    )
    eq.add_argument(
        "--fixed-affine",
        action="store_true",
        help="one fixed bank for every random affine draw (default: a bank conditioned on "
        "each draw's motion descriptors)",
    )
    eq.add_argument("--image-size", type=int, help="default 48 (scenes), 224 (photo)")
    eq.add_argument("--train-images", type=int, default=256, help="images the maps are fit on")
    eq.add_argument("--test-images", type=int, default=128, help="held-out images")
    eq.add_argument(
        "--ridge", type=float, help="relative ridge penalty (default: by cross-validation)"
    )
    eq.add_argument("--task-steps", type=int, default=100, help="steps training M_g⁻¹")
    eq.add_argument("--lr", type=float, default=1e-3, help="of the task training")
    eq.add_argument("--batch-size", type=int, default=32)
    eq.add_argument("--seed", type=int, default=0)
    eq.add_argument("--out", default="runs/equivariance", help="folder for equivariance.json/png")
    eq.add_argument("--device", default="cpu")
    threads_arg(eq)
    eq.add_argument("--overwrite", action="store_true", help="replace existing results")
    eq.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from featcodec.api import check_device
    from featcodec.codec.files import atomic_path, atomic_write
    from featcodec.eval.equivariance import EquivarianceConfig, run_equivariance
    from featcodec.eval.equivariance_report import format_table, plot
    from featcodec.eval.motion_report import report_json
    from featcodec.inputs import refuse_existing

    set_threads(args.threads)
    check_device(args.device)
    checkpoint = args.task_checkpoint
    if checkpoint is None and args.image is None:
        found = newest_demo_checkpoint()
        if found is None:
            raise InputError(
                f"no task checkpoint ({DEMO_TASK_CHECKPOINTS}): run make demo, or give "
                "--task-checkpoint CKPT or --image PHOTO"
            )
        checkpoint = str(found)
        print(f"task network: {checkpoint}")
    out = Path(args.out)
    json_path, png_path = out / "equivariance.json", out / "equivariance.png"
    refuse_existing([json_path, png_path], args.overwrite)
    cfg = EquivarianceConfig(
        task_checkpoint=checkpoint,
        image=args.image,
        backbone=args.backbone,
        weights_file=args.weights_file,
        layers=tuple(args.layers) if args.layers else None,
        transformations=tuple(args.transformations or TRANSFORMATIONS),
        kernels=tuple(args.kernels),
        condition_affine=not args.fixed_affine,
        image_size=args.image_size,
        train_images=args.train_images,
        test_images=args.test_images,
        ridge=args.ridge,
        task_steps=args.task_steps,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
    )
    report = run_equivariance(cfg)
    text = report_json(report)
    with atomic_path(png_path) as tmp:
        plot(report, tmp)
    atomic_write(json_path, text)
    print(format_table(report))
    print(f"\nresults: {json_path}, {png_path} ({report['timing_s'] / 60:.1f} min)")
    return 0
