"""`speechtune data synth|convert|check|from-hf`: thin wrappers over the data modules.
Engines add their own data commands to the group (nemo-canary: `data bins`)."""

from __future__ import annotations

import argparse
import sys
import time

from typing import TYPE_CHECKING, Mapping

from speechtune.data import manifest

if TYPE_CHECKING:  # the check module loads on `data check` only
    from speechtune.data import check

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def register(subparsers: Subparsers, engine_needs: Mapping[str, check.EngineNeeds]) -> Subparsers:
    """Adds the `data` command group to the `speechtune` parser; returns its subparsers
    (for the engines' data commands). `engine_needs`: the registry's, by engine name."""
    data = subparsers.add_parser("data", help="manifests: synthesise, convert, check, export, bins")
    data_subparsers: Subparsers = data.add_subparsers(dest="data_command", required=True)
    _add_synth(data_subparsers)
    _add_convert(data_subparsers)
    _add_check(data_subparsers, engine_needs)
    _add_from_hf(data_subparsers)
    return data_subparsers


def _add_synth(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from speechtune.data import sentences

    parser = subparsers.add_parser(
        "synth", help="synthesise speech (espeak-ng + sox) into train/valid/test manifests"
    )
    parser.add_argument("out", metavar="OUT", help="folder for the manifests and audio/")
    parser.add_argument("--n", type=int, default=400, help="number of utterances (all splits)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same data")
    parser.add_argument(
        "--lang", default=None,
        help="comma-separated languages (en,de,fr,es,bn); default: en, or bn for banglish",
    )
    parser.add_argument("--domain", choices=sentences.DOMAINS, default="generic")
    parser.add_argument("--format", choices=manifest.FORMATS, default="nemo", dest="fmt")
    parser.add_argument("--translate-to", default=None, help="add translation rows into this language")
    parser.add_argument("--noise", action="store_true", help="mix background noise into the audio")
    parser.set_defaults(func=_synth)


def _synth(args: argparse.Namespace) -> int:
    from speechtune.data import sentences, synth

    languages = args.lang.split(",") if args.lang else [sentences.DOMAIN_LANGUAGES[args.domain][0]]
    started = time.monotonic()
    try:
        paths = synth.synthesize(
            args.out, n=args.n, languages=languages, domain=args.domain, seed=args.seed,
            fmt=args.fmt, translate_to=args.translate_to, noise=args.noise,
        )
    except ValueError as error:
        print(f"speechtune data synth: {error}", file=sys.stderr)
        return 2
    for split, path in paths.items():
        print(f"{split}: {path} ({len(manifest.read(path))} utterances)")
    print(f"synthesised {args.n} utterances in {time.monotonic() - started:.1f} s")
    return 0


def _add_check(subparsers: argparse._SubParsersAction,  # type: ignore[type-arg]
               engine_needs: Mapping[str, check.EngineNeeds]) -> None:
    parser = subparsers.add_parser(
        "check", help="preflight manifests: every problem with file and line; exit 1 if any is fatal"
    )
    parser.add_argument("manifests", nargs="+", metavar="MANIFEST")
    parser.add_argument(
        "--tokenizer", default=None,
        help="character vocabulary file, SentencePiece .model, or NeMo tokenizer folder",
    )
    parser.add_argument("--engine", choices=sorted(engine_needs), default=None,
                        help="check what this engine's data loader needs of every row")
    parser.add_argument("--languages", default=None, help="comma-separated allowed languages")
    parser.add_argument("--duration-tolerance", type=float, default=0.1, help="seconds")
    parser.add_argument("--max-problems", type=int, default=50, help="problems to print")
    parser.set_defaults(func=_check, engine_needs=engine_needs)


def _check(args: argparse.Namespace) -> int:
    from speechtune.data import check, tokenizer_chars

    try:
        chars = tokenizer_chars.producible_chars(args.tokenizer) if args.tokenizer else None
    except tokenizer_chars.TokenizerError as error:
        print(f"speechtune data check: --tokenizer: {error}", file=sys.stderr)
        return 2
    report = check.preflight(
        args.manifests,
        tokenizer_chars=chars,
        languages=args.languages.split(",") if args.languages else None,
        needs=args.engine_needs[args.engine] if args.engine else None,
        duration_tolerance=args.duration_tolerance,
    )
    print(report.format(max_problems=args.max_problems))
    return 0 if report.ok else 1


def _add_convert(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("convert", help="convert a manifest between NeMo, SpeechBrain and HF formats")
    parser.add_argument("source", metavar="IN")
    parser.add_argument("target", metavar="OUT")
    parser.add_argument(
        "--format", choices=manifest.FORMATS, default=None, dest="fmt",
        help="OUT's format (default: .json/.jsonl -> nemo, .csv -> speechbrain)",
    )
    parser.set_defaults(func=_convert)


def _convert(args: argparse.Namespace) -> int:
    from speechtune.data import convert

    try:
        written = convert.convert(args.source, args.target, args.fmt)
    except (ValueError, OSError) as error:
        print(f"speechtune data convert: {error}", file=sys.stderr)
        return 2
    print(f"{written}: {len(manifest.read(written))} utterances")
    return 0


def _add_from_hf(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from speechtune.data import normalize

    parser = subparsers.add_parser(
        "from-hf", help="export a local Hugging Face dataset to 16 kHz mono WAVs + train/valid/test manifests"
    )
    parser.add_argument("source", metavar="DATASET", help="a save_to_disk folder or a local load_dataset path")
    parser.add_argument("--out-dir", required=True, help="manifests go to OUT_DIR[/CONFIG]/")
    parser.add_argument("--config", default=None, help="dataset configuration (ATC0: base, part2, part3)")
    parser.add_argument("--train-fraction", type=float, default=1.0, help="first fraction of train (0<f<=1)")
    parser.add_argument("--validation-samples", type=int, default=0, help="cap validation rows (0: all)")
    parser.add_argument("--audio-column", default=None)
    parser.add_argument("--text-column", default=None)
    parser.add_argument("--normalize", choices=sorted(normalize.NORMALIZERS), default="none", dest="normalization",
                        help="normalise transcripts once at export (the ATC0 package uses atc)")
    parser.add_argument("--lang", default=None, help="language of every row (source_lang, target_lang)")
    parser.add_argument("--format", choices=manifest.FORMATS, default="nemo", dest="fmt")
    parser.set_defaults(func=_from_hf)


def _from_hf(args: argparse.Namespace) -> int:
    from speechtune.data import from_hf

    options = from_hf.Options(
        config=args.config, train_fraction=args.train_fraction, validation_samples=args.validation_samples,
        audio_column=args.audio_column, text_column=args.text_column, normalization=args.normalization,
        language=args.lang, fmt=args.fmt,
    )
    try:
        paths = from_hf.export(args.source, args.out_dir, options)
    except ValueError as error:
        print(f"speechtune data from-hf: {error}", file=sys.stderr)
        return 2
    for split, path in paths.items():
        print(f"{split}: {path} ({len(manifest.read(path))} utterances)")
    return 0
