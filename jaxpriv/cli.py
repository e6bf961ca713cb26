"""The ``jaxpriv`` command line: ``train``, ``account``, ``anonymize``, ``demo``, ``experiment``,
``compare``, ``export``, ``audit`` and ``report``."""

import argparse
import dataclasses
import json
import math
import os
import sys

from jaxpriv import host_devices
from jaxpriv.anonymize import layouts, settings
from jaxpriv.audit.spec import AuditSpec
from jaxpriv.compare import harness
from jaxpriv.dp import accounting
from jaxpriv.report import leaks

CONFIG_HELP = (
    "config file with get_config() (see configs/); override any key with "
    "--config.KEY=VALUE, e.g. --config.dp.mode=maskdp --config.dp.epsilon=2"
)


def _train(args, overrides):
    import jax

    from jaxpriv import config as config_lib
    from jaxpriv.report import card
    from jaxpriv.train import loop, parallel

    if args.distributed:
        try:
            parallel.initialize_distributed()
        except ValueError as error:
            raise ValueError(
                f"--distributed: {error} Start the processes with srun, mpirun or on a TPU pod "
                "slice, or set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID."
            ) from error
    config = config_lib.load_config(args.config, overrides)
    loop.check_generation_keys(config.data)
    workdir = args.workdir or os.path.join("runs", config.name)
    lead = jax.process_index() == 0
    if lead:
        print(
            f"training on {jax.device_count()} {jax.default_backend()} device(s) in "
            f"{jax.process_count()} process(es)"
        )
    result = loop.train(config, workdir, progress=not args.no_progress)
    if lead:
        print(format_table([result]))
        print(
            f"metrics: {os.path.join(workdir, 'metrics.jsonl')} (TensorBoard: event files beside)"
        )
    report = card.write_at_end(config, workdir)
    if report:
        print(f"privacy report: {report}")


def _report(args, overrides):
    from jaxpriv.report import card

    _no_overrides(overrides)
    print(f"privacy report: {card.write(args.workdir)}")


def _account(args, overrides):
    _no_overrides(overrides)
    steps = args.steps if args.steps is not None else math.ceil(args.epochs / args.sampling_rate)
    options = dict(
        sampling_rate=args.sampling_rate,
        steps=steps,
        delta=args.delta,
        sampling=args.sampling,
        dataset_size=args.dataset_size,
        neighboring=args.neighboring,
    )
    accountants = accounting.ACCOUNTANTS if args.accountant == "both" else (args.accountant,)
    print(
        f"q={args.sampling_rate:g}  steps={steps}  δ={args.delta:g}  sampling={args.sampling}  "
        f"neighboring={args.neighboring}"
    )
    for name in accountants:
        if args.epsilon is not None:
            found = accounting.calibrate(target_epsilon=args.epsilon, accountant=name, **options)
            print(
                f"{name}: σ={found.noise_multiplier:.4f} spends ε={_number(found.epsilon)} "
                f"(target ε={args.epsilon:g})"
            )
        else:
            found = accounting.account(
                noise_multiplier=args.noise_multiplier, accountant=name, **options
            )
            print(f"{name}: ε={_number(found.epsilon)} with σ={args.noise_multiplier:g}")
        if found.note:
            print(f"  note: {found.note}")


def _number(value: float) -> str:
    """Four decimals, or four significant digits for huge values."""
    return f"{value:.4f}" if value < 1e6 else f"{value:.4g}"


def _demo(args, overrides):
    from jaxpriv import demo

    results = demo.run(
        epsilon=args.epsilon,
        workdir=args.workdir,
        overrides=overrides,
        progress=not args.no_progress,
    )
    print(format_table(results))
    print(
        "MaskDP protects the sensitive (real) pixels of each example; labels, the location of "
        "the sensitive region and the public (synthetic) pixels are not protected."
    )


def _experiment(args, overrides):
    from jaxpriv.experiments import sweep

    experiment = sweep.load(args.config, overrides)
    workdir = args.workdir or os.path.join("runs", experiment.name)
    if args.dry_run:
        print(sweep.describe(experiment, workdir))
        return
    print(sweep.run(experiment, workdir, progress=not args.no_progress))
    print(f"results: {os.path.join(workdir, 'results.md')} (.csv, .jsonl and plots beside it)")


def _compare(args, overrides):
    from jaxpriv import config as config_lib

    config = config_lib.load_config(args.config, overrides, default=harness.default_config)
    parts = args.only or harness.PARTS
    print(harness.run(config, parts, args.workdir, progress=not args.no_progress))
    print(f"results: {args.workdir}/compare.md and one JSON file per part beside it")


def _audit(args, overrides):
    from jaxpriv.audit import run as audit

    _no_overrides(overrides)
    results = audit.audit_suite(
        args.epsilon,
        tuple(args.seeds),
        canaries=args.canaries,
        steps=args.steps,
        sampling_rate=args.sampling_rate,
        confidence=args.confidence,
    )
    table = audit.format_table(results)
    print(table)
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
        with open(os.path.join(args.workdir, "audit.json"), "w") as f:
            json.dump(results, f, indent=1)
        with open(os.path.join(args.workdir, "audit.md"), "w") as f:
            f.write(table + "\n")
    failed = [r for r in results if not audit.passed(r)]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(results)} audits did not find what they should")


def _anonymize(args, overrides):
    _no_overrides(overrides)
    from jaxpriv.anonymize import runner, tasks
    from jaxpriv.data import synthetic

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(settings.Options)}
    given = {name: value for name, value in given.items() if value is not None}
    units = layouts.read_input(
        args.format,
        args.input,
        annotations=args.annotations,
        strict=args.on_error == "fail",
        num_clips=args.num_clips,
        frames=args.frames,
        seed=given.get("seed", 0),
    )
    defaults = settings.Options()
    if args.format == "synthetic":
        defaults = settings.Options(
            size=synthetic.DEFAULT_SIZE, clip_frames=args.frames, frame_stride=1
        )
    ignored = layouts.ignored_files(args.format, args.input)
    task = tasks.from_environment(args.task_index, args.num_tasks)
    summary = runner.run(
        units,
        args.out,
        dataclasses.replace(defaults, **given),
        workers=args.workers,
        shard_size=args.shard_size,
        on_error=args.on_error,
        progress=not args.no_progress,
        input_root=args.input,
        ignored=ignored,
        task=task,
        finish_only=args.finalize,
        preview=args.preview,
    )
    if summary is None:
        print(
            f"task {task.index} of {task.count}: its shards are written in {args.out}; the "
            "run is finished by the last task to end (or by --finalize)"
        )
        return
    records, inputs = summary["records"], summary["inputs"]
    print(
        f"anonymized {inputs['anonymized']} of {len(units)} inputs into "
        f"{records['train'] + records['test']} records (train {records['train']}, "
        f"test {records['test']}) in {args.out}"
    )
    print(f"drop-in copy: {summary['images']}\nTFDS dataset: {summary['dataset']}")
    print(f"per input (regions found, confidence, status): {args.out}/inputs.jsonl")
    if summary.get("preview"):
        print(f"preview (failures first): {summary['preview']}")
    if summary["nothing_found"]:
        what = "kept unchanged" if inputs["kept"] else "skipped"
        print(
            f"nothing found in {len(summary['nothing_found'])} inputs ({what}; --if-none): "
            + ", ".join(summary["nothing_found"][:10])
        )
    if ignored:
        print(f"not read ({len(ignored)} files that are not inputs): " + ", ".join(ignored[:10]))
    if summary["skipped"]:
        print(f"skipped {len(summary['skipped'])} inputs (see {args.out}/summary.json):")
        for item in summary["skipped"][:10]:
            print(f"  {item['key']}: {item['error']}")


def _export(args, overrides):
    from jaxpriv.train.export import export

    _no_overrides(overrides)
    summary = export(args.workdir, args.out)
    print(json.dumps(summary, indent=1, sort_keys=True))
    print(f"wrote {args.out}/params.npz and {args.out}/summary.json (no secret)")


def add_options(parser: argparse.ArgumentParser, options_class) -> None:
    """A flag per field of a dataclass of options (``--field-name``), with the field's help,
    choices and default; flags the user does not give parse as None."""
    for field in dataclasses.fields(options_class):
        flag, meta = "--" + field.name.replace("_", "-"), field.metadata
        help_text = f"{meta['help']} (default: {field.default})"
        if isinstance(field.default, bool):
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
            continue
        choices = None if meta["choices"] is None else list(meta["choices"])
        parser.add_argument(
            flag, type=type(field.default), choices=choices, default=None, help=help_text
        )


def _no_overrides(overrides):
    if overrides:
        raise SystemExit(f"jaxpriv: unrecognized arguments: {' '.join(overrides)}")


def format_table(results: list[dict]) -> str:
    """Markdown table of run summaries (mode, ε, δ, σ, steps, test accuracy, wall time)."""
    lines = [
        "| mode | ε | δ | σ | steps | test accuracy | wall time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        eps = "∞" if r["epsilon"] is None else f"{r['epsilon']:.2f}"
        lines.append(
            f"| {r['mode']} | {eps} | {r['delta']:g} | {r['noise_multiplier']:.3f} | "
            f"{r['step']} | {r['test_accuracy']:.3f} | {r['wall_time']:.0f} |"
        )
    return "\n".join(lines)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to every option whose help does not name its default already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        silent = action.default in (None, False, argparse.SUPPRESS) or action.required
        if silent or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxpriv",
        description="Anonymize people in images and videos, then train with differential "
        "privacy (DP-SGD) or MaskDP (DP on the sensitive pixels only).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        formatter_class=DefaultsHelpFormatter,
        help="train one config (non-private, DP-SGD or MaskDP)",
        description="Train a model as a config file says. Writes metrics (test accuracy, ε "
        "spent, σ, step time per epoch) as JSON lines to WORKDIR/metrics.jsonl, the same and "
        "the released loss every train.log_every_steps as TensorBoard event files beside it "
        "(log.tensorboard; view with `tensorboard --logdir runs`) and to Weights & Biases with "
        "--config.log.wandb=true, WORKDIR/run.json (config without the secret seed, and plan), "
        "and at the end WORKDIR/report.md (log.report; see `jaxpriv report`); prints a summary. "
        "DP runs calibrate σ to dp.epsilon, or, with dp.noise_multiplier > 0, stop "
        "when dp.epsilon is spent. What is logged: MaskDP the public-view loss, DP-SGD no "
        "training loss; --config.train.log_private_loss=true adds the loss of the private batch, "
        "which is NOT covered by ε. WORKDIR/checkpoints hold the run's secret seed: keep them "
        "private and release with `jaxpriv export`.",
        epilog=CONFIG_HELP,
    )
    train.add_argument("--config", required=True, help="config file, e.g. configs/video_maskdp.py")
    train.add_argument("--workdir", help="output folder (default: runs/<config.name>)")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.add_argument(
        "--distributed",
        action="store_true",
        help="join a multi-process run (jax.distributed), every process started with the same "
        "arguments and a --workdir they all see: SLURM srun or Open MPI mpirun with one process "
        "per GPU, each seeing all GPUs of its node (one per node: also set "
        "JAX_LOCAL_DEVICE_IDS=0,1,...); one process per worker of a TPU pod slice; or any "
        "launcher with JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and "
        "JAX_PROCESS_ID set. Not needed for one process on all devices of one machine.",
    )
    train.set_defaults(run=_train)

    account = commands.add_parser(
        "account",
        formatter_class=DefaultsHelpFormatter,
        help="ε of a DP schedule, or σ for a target ε",
        description="Privacy accounting with dp-accounting (RDP and PLD). Give σ to get ε, or a "
        "target ε to get the smallest σ that reaches it.",
    )
    noise = account.add_mutually_exclusive_group(required=True)
    noise.add_argument("--noise-multiplier", "--sigma", type=float, help="σ (noise std / C)")
    noise.add_argument("--epsilon", type=float, help="target ε: print the calibrated σ instead")
    account.add_argument(
        "--sampling-rate",
        "-q",
        type=float,
        required=True,
        help="q = expected batch size / dataset size",
    )
    length = account.add_mutually_exclusive_group(required=True)
    length.add_argument("--steps", type=int, help="number of training steps")
    length.add_argument("--epochs", type=float, help="number of epochs (steps = ⌈epochs / q⌉)")
    account.add_argument("--delta", type=float, default=1e-5, help="δ (default 1e-5)")
    account.add_argument(
        "--accountant",
        choices=["rdp", "pld", "both"],
        default="both",
        help="accountant (default: both)",
    )
    account.add_argument(
        "--sampling",
        choices=list(accounting.SAMPLINGS),
        default="poisson",
        help="poisson (default) or shuffle: a fixed-size batch drawn without replacement, "
        "independently at every step (RDP, replace_one); per-epoch shuffling is not covered",
    )
    account.add_argument("--dataset-size", type=int, help="N; needed for --sampling shuffle")
    account.add_argument(
        "--neighboring",
        choices=list(accounting.NEIGHBORINGS),
        default="add_remove",
        help="add_remove (default) or replace_one (sensitivity 2C)",
    )
    account.set_defaults(run=_account)

    anonymize = commands.add_parser(
        "anonymize",
        formatter_class=DefaultsHelpFormatter,
        help="find people, anonymize them, write a drop-in copy and a TFDS dataset",
        description="Reads a dataset (COCO json + images, Cityscapes gtFine, a folder of images "
        "or of videos), anonymizes the faces or full bodies of the people in it, and "
        "writes OUT/images (same layout and file names, anonymized pixels) and "
        "OUT/tfds (records with image, label, per-pixel sensitive mask and "
        "anonymized-region mask, for jaxpriv train). Interrupted runs resume: "
        "finished shards are skipped. The TFDS dataset appears only when complete.",
    )
    anonymize.add_argument(
        "--format",
        choices=list(layouts.FORMATS),
        required=True,
        help="input format: coco, folder (images) or video (video files), whose "
        "first sub-folder is the label; synthetic: the embedded generated clips, each figure a "
        "person (no --input); or a dataset layout that checks its tree and labels its inputs "
        f"({', '.join(layouts.LAYOUTS)}; see jaxpriv/anonymize/layouts.py)",
    )
    anonymize.add_argument(
        "--input",
        help="image root (coco: the folder the json's file_name values are "
        "relative to), folder of images/videos (the first sub-folder of each file is its "
        "class label), or a dataset layout's root",
    )
    anonymize.add_argument("--annotations", help="coco: instances or person_keypoints json")
    anonymize.add_argument("--out", required=True, help="output folder")
    add_options(anonymize, settings.Options)
    anonymize.add_argument(
        "--num-clips", type=int, default=512, help="synthetic: clips to generate (default 512)"
    )
    anonymize.add_argument(
        "--frames", type=int, default=4, help="synthetic: frames per clip (default 4)"
    )
    anonymize.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    anonymize.add_argument(
        "--shard-size",
        type=int,
        help="inputs per shard, the unit of resume (default 64 images or 1 video)",
    )
    anonymize.add_argument(
        "--on-error",
        choices=list(settings.ON_ERROR),
        default="skip",
        help="corrupt, truncated or unreadable files and broken annotations: skip and list "
        "them, or stop (default skip)",
    )
    anonymize.add_argument(
        "--num-tasks",
        type=int,
        help="split the run over this many tasks, each running this same command with its "
        "--task-index (default: SLURM_ARRAY_TASK_COUNT in a SLURM array, else 1); a task "
        "processes the shards i with i %% num-tasks == task-index, resumes on its own, and the "
        "last one to finish writes the dataset, once",
    )
    anonymize.add_argument(
        "--task-index",
        type=int,
        help="this task's index, 0 to num-tasks - 1 (default: SLURM_ARRAY_TASK_ID - "
        "SLURM_ARRAY_TASK_MIN, or Kubernetes' JOB_COMPLETION_INDEX, else 0)",
    )
    anonymize.add_argument(
        "--finalize",
        action="store_true",
        help="process nothing: write the dataset of a run whose shards are all written (else "
        "name the missing shards and write nothing)",
    )
    anonymize.add_argument(
        "--preview",
        type=int,
        default=16,
        help="inputs shown in OUT/preview.png (0: none): those where nothing was found and the "
        "skipped ones first (at most half of the rows while there are others to show), then a "
        "seeded sample; each row shows the original, the anonymized "
        "copy and the record's sensitivity (public / anonymized but private / real)",
    )
    anonymize.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    anonymize.set_defaults(run=_anonymize)

    demo = commands.add_parser(
        "demo",
        formatter_class=DefaultsHelpFormatter,
        help="non-private vs DP-SGD vs MaskDP on the embedded synthetic videos",
        description="Generates the embedded synthetic action clips (nothing is downloaded), "
        "trains a video ViT for 7 epochs non-privately, with DP-SGD and with MaskDP at the "
        "same ε, δ, sampling rate and steps, and prints one table.",
        epilog="Overrides (--config.KEY=VALUE) apply to all three runs.",
    )
    demo.add_argument("--epsilon", type=float, default=4.0, help="ε of both DP runs (default 4)")
    demo.add_argument(
        "--workdir", default=os.path.join("runs", "demo"), help="output folder (default: runs/demo)"
    )
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    demo.set_defaults(run=_demo)

    experiment = commands.add_parser(
        "experiment",
        formatter_class=DefaultsHelpFormatter,
        help="a sweep over a grid of training configs, with a table and plots",
        description="Trains one run per cell of the grid in an experiment config file (see "
        "configs/experiments/) in WORKDIR/cells/<cell>/ (metrics.jsonl, TensorBoard event "
        "files and report.md, as `jaxpriv train`), appends each result to "
        "WORKDIR/results.jsonl, and writes WORKDIR/results.md, results.csv and PNG plots "
        "(accuracy vs ε per DP mode; accuracy relative to report.reference). With an "
        "anonymization stage (anonymize.layout), each anonymization in the grid is made once "
        "in WORKDIR/data/ and the cells are tested on the original test split. Interrupted "
        "sweeps resume: finished cells and anonymized copies are kept, a half-done cell "
        "resumes from its checkpoint.",
        epilog="Overrides apply to the experiment config, e.g. --config.grid.seed=[0,1] "
        "--config.base.train.epochs=1 --config.anonymize.root=~/data/UCF-101.",
    )
    experiment.add_argument("config", metavar="CONFIG", help="experiment config file")
    experiment.add_argument("--workdir", help="output folder (default: runs/<config.name>)")
    experiment.add_argument(
        "--dry-run",
        action="store_true",
        help="check the dataset layout, print the planned cells with their dataset size, q, "
        "steps, σ and ε; anonymize and train nothing",
    )
    experiment.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    experiment.set_defaults(run=_experiment)

    compare = commands.add_parser(
        "compare",
        formatter_class=DefaultsHelpFormatter,
        help="jaxpriv vs PyTorch and Opacus: gradients, ε, step time, trained accuracy",
        description="Checks jaxpriv against PyTorch and Opacus (install with "
        "`bash launch/setup.sh compare`). gradients: PyTorch twins of the ViT, video ViT and "
        "GroupNorm ResNet, converted from the Flax weights, give the same per-example clipped "
        "gradients (Opacus) and the same summed DP-SGD update on the same batch. accounting: "
        "ε from jaxpriv's RDP and PLD vs Opacus' RDP and PRV accountants on the same schedules. "
        "speed: median train-step time of jaxpriv (non-private, DP-SGD, MaskDP), PyTorch "
        "non-private and Opacus DP-SGD (hooks, ghost clipping), same model, batch and process. "
        "training: the same DP-SGD config trained by jaxpriv and by Opacus from the same initial "
        "weights, once per seed. Prints the tables and writes WORKDIR/compare.md and "
        "WORKDIR/<part>.json.",
        epilog="Overrides apply to the comparison config, e.g. --config.seeds=0,1 "
        "--config.repeats=10 --config.run.train.batch_size=128 (see configs/compare.py).",
    )
    compare.add_argument(
        "--config", help="comparison config file (default: the built-in one, as configs/compare.py)"
    )
    compare.add_argument(
        "--only",
        action="append",
        choices=harness.PARTS,
        help="run only this part; repeat for several (default: all four, about 10 min on 2 CPU "
        "cores, most of it training)",
    )
    compare.add_argument(
        "--workdir",
        default=os.path.join("runs", "compare"),
        help="output folder (default: runs/compare)",
    )
    compare.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    compare.set_defaults(run=_compare)

    export = commands.add_parser(
        "export",
        formatter_class=DefaultsHelpFormatter,
        help="write a trained run's parameters and public summary for release",
        description="Writes OUT/params.npz (the parameters of WORKDIR's latest checkpoint, "
        "loadable with --config.model.init_from) and OUT/summary.json (mode, ε, δ, σ, steps, "
        "test accuracy). The checkpoints themselves hold the run's secret seed (anyone who has "
        "it can replay the DP noise): keep WORKDIR private and release only what this writes.",
    )
    export.add_argument("workdir", help="the workdir of a finished `jaxpriv train` run")
    export.add_argument("out", help="the folder to create (must not exist)")
    export.set_defaults(run=_export)

    audit = commands.add_parser(
        "audit",
        formatter_class=DefaultsHelpFormatter,
        help="empirical privacy audit: a lower bound on ε from canaries, in one run each",
        description="Audits DP-SGD and MaskDP empirically with one-run auditing (Steinke, Nasr "
        "and Jagielski 2023). Each audit trains a small ViT with jaxpriv's own train step on "
        "random canaries, each included with probability 1/2, guesses from the released "
        "iterates (white-box) which canaries were in, and turns the number of correct guesses "
        "into a lower bound ε̂ on ε at the given confidence. Five audits per seed: DP-SGD at "
        "--epsilon, DP-SGD with the noise off, MaskDP with canaries in sensitive pixels at "
        "--epsilon, MaskDP with canaries in public pixels, and 'maskdp-coupled': the flawed "
        "design that summed the public gradients over the private batch (kept in the audit "
        "only). Correct configurations must give ε̂ ≤ ε; the three self-tests must find their "
        "leak (ε̂ above the claimed ε and above 1). Exits with status 2 if any audit does not.",
    )
    audit.add_argument(
        "--epsilon", type=float, default=2.0, help="ε that σ is calibrated to (default 2)"
    )
    audit.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="one suite per seed (default 0)"
    )
    defaults = AuditSpec()
    audit.add_argument(
        "--canaries",
        type=int,
        default=defaults.canaries,
        help=f"canaries per audit (default {defaults.canaries}); more canaries allow a larger ε̂",
    )
    audit.add_argument(
        "--steps",
        type=int,
        default=defaults.steps,
        help=f"training steps (default {defaults.steps})",
    )
    audit.add_argument(
        "--sampling-rate",
        type=float,
        default=defaults.sampling_rate,
        help=f"Poisson sampling rate q (default {defaults.sampling_rate}); q × canaries must be "
        "a whole batch size",
    )
    audit.add_argument(
        "--confidence", type=float, default=0.95, help="confidence of ε̂ (default 0.95)"
    )
    audit.add_argument(
        "--workdir",
        help="also write audit.json and audit.md here (a training workdir: its report shows them)",
    )
    audit.set_defaults(run=_audit)

    report = commands.add_parser(
        "report",
        formatter_class=DefaultsHelpFormatter,
        help="write a training run's privacy report (WORKDIR/report.md)",
        description="Writes WORKDIR/report.md with its pictures in WORKDIR/report/: what the run "
        "protects (mode, privacy unit, adjacency, ε, δ, σ, q, steps, accountant) and what it does "
        "not, ε and test accuracy per epoch, a sample of the training records with their "
        "sensitivity, and, when the dataset was made by `jaxpriv anonymize`, that run's summary "
        "and preview and a leak check: its face detector run on a sample of the anonymized "
        "outputs, listing every face whose pixels still correlate with the original's by "
        f"{leaks.LEAK_CORRELATION} or "
        f"more. Adds the latest `jaxpriv audit --workdir WORKDIR`. `jaxpriv train` writes it at "
        "the end of a run (log.report), `jaxpriv experiment` for every cell.",
    )
    report.add_argument("workdir", help="the workdir of a `jaxpriv train` run")
    report.set_defaults(run=_report)
    return parser


def main(argv=None):
    parser = build_parser()
    args, overrides = parser.parse_known_args(argv)
    try:
        args.run(args, overrides)
    except (ValueError, OSError, FloatingPointError, RuntimeError) as error:
        print(f"jaxpriv {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


def entry():
    """The ``jaxpriv`` program: every CPU core (``jaxpriv.host_devices``), then ``main``."""
    host_devices.use_every_core()
    sys.exit(main())


if __name__ == "__main__":
    entry()
