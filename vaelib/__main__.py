"""Command line: `python -m vaelib {train,evaluate,list,download,sweep,study,export-web} --help`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import checkpoints, checks, data, files, models, registry, study, sweep, train


class Parser(argparse.ArgumentParser):
    """argparse, but a bad argument gives one line on stderr and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m vaelib", description="Train, evaluate and list the course's models.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = commands.add_parser("train", help="train a registry model (and save it) or a custom one",
                            description="Train registry models by name (their checkpoints are replaced "
                                        "only once training succeeds), or a custom model with --model.")
    p.add_argument("names", nargs="*", help=f"registry names: {', '.join(registry.REGISTRY)}; or 'all'")
    p.add_argument("--missing", action="store_true", help="with 'all': only those without a valid checkpoint")
    p.add_argument("--model", choices=["autoencoder", "vae", "conv_vae", "cvae"], help="train a custom model")
    p.add_argument("--latent-dim", type=int, default=2)
    p.add_argument("--beta", type=float, default=1.0)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--activation", choices=["relu", "tanh"], default="relu")
    p.add_argument("--precision", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="the forward pass's precision; auto: bfloat16 only where it is faster on this machine")
    p.add_argument("--out", help="checkpoint path for a custom model, from the current folder (required with --model)")
    p.add_argument("--overwrite", action="store_true", help="with --out: replace a checkpoint already there")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")

    p = commands.add_parser("evaluate", help="test metrics of a checkpoint",
                            description="Test negative ELBO (reconstruction, KL), the importance-weighted "
                                        "bound and active units, per image, in nats.")
    p.add_argument("targets", nargs="*", help="registry names or checkpoint paths; 'all' for the registry")
    p.add_argument("--k", type=int, default=1000, help="importance samples (default 1000)")
    p.add_argument("--iw-images", type=int, help="test images for the IW bound (default: the recipe's)")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    p.add_argument("--save", action="store_true", help="write the metrics into the checkpoint's sidecar")

    commands.add_parser("list", help="the registry with each checkpoint's status and metrics",
                        description="The registry with each checkpoint's status and stored metrics.")

    p = commands.add_parser("download", help="fetch MNIST (or Fashion-MNIST) into the data folder",
                            description="Download the dataset's missing IDX files from the canonical mirrors "
                                        "and check their SHA-256. Files already there are never replaced.")
    p.add_argument("--dataset", choices=[*sorted(data.DATASETS), "all"], default="mnist")
    p.add_argument("--root", help=f"data root (default: ${data.ENV_VAR}, else ./data)")
    p.add_argument("--mirror", action="append", help="a base URL to fetch from instead (repeatable)")

    p = commands.add_parser("export-web", help="write the data file of the book's in-browser explorers",
                            description="Write the decoder weights, latent means and traversal frames that "
                                        "the book's explorer page decodes in the browser.")
    p.add_argument("path", help="the JavaScript file to write, e.g. book/web/explorer/models.js")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the files that an earlier export-web wrote there (never any other file)")

    p = commands.add_parser("sweep", help="re-run a chapter over a grid of parameters with papermill",
                            description="Execute a chapter once per value of a parameter, writing each "
                                        "executed notebook and a table of their metrics.")
    p.add_argument("notebook")
    p.add_argument("-p", "--parameter", nargs="+", action="append", required=True, metavar=("NAME", "VALUE"),
                   help="a parameter and its values, e.g. -p beta 0 1 4; repeat for a grid")
    p.add_argument("--out", default="_build/sweeps", help="folder for the executed notebooks")
    p.add_argument("--timeout", type=float, default=3600,
                   help="seconds a cell may run before its run is recorded as failed (default 3600)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the notebooks and tables that an earlier sweep wrote in --out")

    p = commands.add_parser("study", help="train a registry recipe over several seeds, resumably",
                            description="Train a registry recipe once per seed, keeping each seed's checkpoint "
                                        "and metrics as soon as it finishes (a re-run skips finished seeds), "
                                        "and write the results table and its mean +- sd summary.")
    p.add_argument("recipe", help=f"a registry name: {', '.join(registry.REGISTRY)}")
    p.add_argument("--seeds", default="0-4", help="a range or list, e.g. 0-4 or 0,2,5 (default 0-4)")
    p.add_argument("--out", default="results/studies", help="folder of the studies (default results/studies)")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs (a quick study, in its own folder)")
    p.add_argument("--train-subset", type=int, help="train on the first N training images only")
    p.add_argument("--jobs", type=int, help="seeds trained at once (default: one per two cores)")
    p.add_argument("--iw-k", type=int, help="importance samples of the IW bound (default: the recipe's, mostly 1000)")
    p.add_argument("--iw-images", type=int, help="test images for the IW bound (default: the recipe's)")
    p.add_argument("--precision", choices=study.PRECISIONS,
                   help="train every seed in this precision instead of the recipe's (its own folder)")
    return parser


def _row(name: str, metrics: dict) -> list[str]:
    fmt = lambda key, spec=".2f": format(metrics[key], spec) if key in metrics else "-"  # noqa: E731
    return [name, fmt("neg_elbo"), fmt("reconstruction"), fmt("kl"), str(metrics.get("iw_images", "-")),
            fmt("neg_elbo_iw_images"), fmt("iw_nll"), str(metrics.get("active_units", "-"))]


def header(k: int = 1000) -> list[str]:
    """-ELBO, BCE and KL on the whole test set; the -IW bound beside the -ELBO of the same (IW) images."""
    return ["model", "-ELBO", "BCE", "KL", "IW images", "-ELBO there", f"-IW bound k={k}", "active units"]


HEADER = header()


def _print_table(header: list[str], rows: list[list[str]], markdown: bool = False) -> None:
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))


def cmd_train(args) -> None:
    if args.model:
        if args.names or not args.out:
            raise ValueError("--model trains one custom model: give --out PATH and no registry names")
        spec = registry.custom_recipe(args.model, args.latent_dim, args.beta, args.epochs, args.seed,
                                      args.batch_size, args.lr, args.activation, args.precision)
        out = Path(args.out).absolute()  # a path from the current folder, never one in the package
        weights, _ = checkpoints.paths(out)
        existing = [path for path in checkpoints.paths(out) if path.exists() or path.is_symlink()]
        if existing and not args.overwrite:  # checked before anything is touched, and again by the save itself
            raise ValueError(f"{existing[0]} already exists: choose another --out, or add --overwrite to replace it")
        files.check_writable_folder(weights.parent, "--out")
        checks.check_replaceable_checkpoint(*checkpoints.paths(out), args.overwrite)  # only a checkpoint of ours
        model, history, metrics = registry.train_recipe(spec, device=args.device, progress=True)
        path = registry.save_trained(out, spec, model, history, metrics, overwrite=args.overwrite)
        print(f"saved {path}: {json.dumps(metrics)}")
        return
    names = list(registry.REGISTRY) if args.names == ["all"] else args.names
    if not names:
        raise ValueError("name a registry model (or 'all'), or give --model for a custom one")
    for name in names:
        registry.recipe(name)  # fail on a bad name before any training
    for name in names:
        if args.missing and registry.status(name) == "valid":
            continue
        path = registry.retrain_and_save(name, device=args.device)
        print(f"saved {path}")


def cmd_download(args) -> None:
    for dataset in sorted(data.DATASETS) if args.dataset == "all" else [args.dataset]:
        data.download(dataset, args.root, mirrors=tuple(args.mirror) if args.mirror else None)
        for name in data.DATASETS[dataset].sha256:  # the files already there were not checked: check all
            data.read_idx(name, dataset, args.root)
        where = sorted({str(data.find_file(name, dataset, args.root).parent.absolute())
                        for name in data.DATASETS[dataset].sha256})  # Fashion-MNIST: maybe Debian's folder
        print(f"{dataset.upper()} is ready in {', '.join(where)}")


def cmd_evaluate(args) -> None:
    targets = list(registry.REGISTRY) if args.targets == ["all"] else args.targets
    if not targets:
        raise ValueError("name a registry model, a checkpoint path, or 'all'")
    checks.check_positive_int("--k", args.k, maximum=train.MAX_K)  # before anything is allocated
    if args.iw_images is not None:
        checks.check_positive_int("--iw-images", args.iw_images, maximum=10_000)  # the test set's size
    if args.save:  # the sidecars must be writable before minutes of scoring
        for target in targets:
            files.check_writable_folder(checkpoints.paths(target)[1].parent, "--save")
    names = [registry.name_of(target) for target in targets]  # a registry checkpoint, however it is spelled
    loaded = [checkpoints.load(target, expected=registry.recipe(name).expected() if name else None)
              for target, name in zip(targets, names)]  # every target, before any scoring
    test_sets = {}  # (dataset, binarized) -> the test images, each loaded once however many targets use it
    test_labels = {}  # dataset -> its test labels (N,), loaded once, for the conditional models only
    for _, sidecar in loaded:  # and every test set they need
        key = (registry.dataset_of(sidecar), bool(sidecar.get("binarized")))  # each model on its own test set
        if key not in test_sets:
            test_sets[key] = registry.test_images(key[1], key[0])
    rows = []
    for target, name, (model, sidecar) in zip(targets, names, loaded):
        key = (registry.dataset_of(sidecar), bool(sidecar.get("binarized")))
        test_x = test_sets[key]
        iw_images = args.iw_images
        if iw_images is None:
            iw_images = registry.REGISTRY[name].iw_images if name else len(test_x)
        labels = None
        if models.is_conditional(model):  # a cvae reads the digit beside each image
            if key[0] not in test_labels:
                test_labels[key[0]] = data.load_mnist("test", dataset=key[0])[1]
            labels = test_labels[key[0]]
        metrics = registry.test_metrics(model, test_x, iw_images, args.k, progress=True, labels=labels)
        if args.save:
            sidecar["metrics"] = {**sidecar.get("metrics", {}), **metrics}
            checkpoints.write_sidecar(target, sidecar)
        rows.append(_row(target, metrics))
    _print_table(header(args.k), rows, args.markdown)


def cmd_list(args) -> None:
    rows = []
    for name, spec in registry.REGISTRY.items():
        state = registry.status(name)
        sidecar = checkpoints.read_sidecar(name) if state == "valid" else {}
        chosen = f"; seed {spec.seed}, its study's median" if "chosen" in sidecar else ""
        scored_on = spec.dataset + (", binarized" if spec.binarized else "")  # its metrics' test set
        rows.append([name, state.split(":")[0]] + _row(name, sidecar.get("metrics", {}))[1:]
                    + [scored_on, spec.description + chosen])
        if state.startswith("invalid"):
            print(f"{name}: {state}", file=sys.stderr)
    _print_table(["model", "status"] + HEADER[1:] + ["test set", "used in"], rows)
    from . import judge
    state = judge.status()
    accuracy = judge.load().record["metrics"].get("test_accuracy") if state == "valid" else None
    print(f"\n{judge.NAME}  {state.split(':')[0]}  the digit classifier that judges samples and completions"
          + (f", test accuracy {accuracy:.2%} on MNIST's 10,000 test images" if accuracy is not None else ""))
    if state.startswith("invalid"):
        print(f"{judge.NAME}: {state}", file=sys.stderr)


def fail(command: str, error, code: int) -> int:
    """Print the error as one line on stderr and return the exit code."""
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"python -m vaelib {command}: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "sweep":
            sweep.run(args.notebook, args.parameter, args.out, args.timeout, overwrite=args.overwrite)
        elif args.command == "study":
            table = study.run(args.recipe, args.seeds, args.out, args.epochs, args.train_subset, args.jobs,
                              args.iw_k, args.iw_images, precision=args.precision)
            print(f"wrote {table} (and table.md, summary.md)")
            print(table.with_name("summary.md").read_text())
        elif args.command == "download":
            cmd_download(args)
        elif args.command == "export-web":
            from . import web
            print(f"wrote {web.export(args.path, overwrite=args.overwrite)}")
        else:
            {"train": cmd_train, "evaluate": cmd_evaluate, "list": cmd_list}[args.command](args)
    except data.DownloadError as error:  # the network or the mirror, not the arguments
        return fail(args.command, error, 1)
    except (ValueError, FileNotFoundError) as error:  # bad input: one line, exit code 2
        return fail(args.command, error, 2)
    except sweep.SweepFailed as error:  # the runs that worked are written; say which did not
        return fail(args.command, error, 1)
    except train.TrainingDiverged as error:  # nothing was saved: the previous checkpoint stands
        return fail(args.command, f"{error} Nothing was saved.", 1)
    except (checkpoints.SaveFailed, OSError) as error:  # the machine, not the arguments
        return fail(args.command, error, 1)
    except KeyboardInterrupt:
        return fail(args.command, "interrupted: nothing was saved from the unfinished step", 130)
    except Exception as error:  # a bug: still one line, never a traceback
        return fail(args.command, f"unexpected {type(error).__name__}: {error}. Please report this", 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
