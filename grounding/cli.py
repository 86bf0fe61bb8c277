"""The ``grounding`` command.

    grounding fit|validate|test --config configs/tiny.yaml     # LightningCLI (training / evaluation)
    grounding fit-verifier --model default --out DIR            # second stage: the mask verifier
    grounding predict --image IMG --prompt "..." --out DIR      # one image -> overlay PNG + JSON
    grounding serve --model default --port 8000                 # HTTP server: POST /v1/predict
    grounding demo --model default --port 7860                  # interactive web demo (Gradio)

Run ``grounding <command> --help`` for each command's options.
"""

from __future__ import annotations

import sys

LIGHTNING_COMMANDS = ("fit", "validate", "test")


def lightning_cli(args: list[str] | None, run: bool = True):
    """Build (and by default run) the LightningCLI for ``GroundingLitModule`` + ``GroundingDataModule``."""
    from jsonargparse import set_parsing_settings
    from lightning.pytorch.cli import LightningCLI

    from data.datamodule import GroundingDataModule
    from grounding.lit_module import GroundingLitModule

    set_parsing_settings(docstring_parse_attribute_docstrings=True)

    return LightningCLI(
        GroundingLitModule,
        GroundingDataModule,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
    )


USAGE = """usage: grounding <command> [options]

commands:
  fit        train a model (LightningCLI; --config configs/*.yaml)
  validate   evaluate on the validation set (cIoU, gIoU, N-acc, Acc@0.5, ...)
  test       evaluate on the test set
  fit-verifier  fit the mask verifier on a trained model's own candidates (a second stage; see README)
  predict    ground a prompt in one image: overlay PNG + JSON (boxes, RLE masks)
  serve      HTTP server: POST /v1/predict (multipart image + prompt), GET /healthz, OpenAPI at /docs
  track      ground a prompt on a keyframe and track the objects through a video: overlay mp4 + JSON (RLE)
  track-eval J&F of video tracking per referring expression (synthetic videos, Ref-YouTube-VOS, MeViS)
  demo       interactive web demo (Gradio): image and video tabs in the browser (needs the 'demo' extra)
  export     merge LoRA and write a self-contained model folder (transformers vision-LLM + heads + config)
  plan-memory  per-GPU memory of a training config (parameters, gradients, optimizer, activations): does it fit?
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd in LIGHTNING_COMMANDS:
        # LightningCLI reads sys.argv itself when run as the console script
        lightning_cli(None if argv == sys.argv[1:] else [cmd] + rest)
        return 0
    if cmd == "predict":
        from grounding.commands import predict_main

        return predict_main(rest)
    if cmd == "serve":
        from grounding.commands import serve_main

        return serve_main(rest)
    if cmd == "demo":
        from demo.app import main as demo_main

        return demo_main(rest)
    if cmd in ("track", "track-eval"):
        from grounding.commands_track import track_eval_main, track_main

        return (track_main if cmd == "track" else track_eval_main)(rest)
    if cmd == "export":
        from grounding.export import export_main

        return export_main(rest)
    if cmd == "fit-verifier":
        from grounding.verifier_fit import fit_verifier_main

        return fit_verifier_main(rest)
    if cmd == "plan-memory":
        from grounding.memory import plan_memory_main

        return plan_memory_main(rest)
    print(f"grounding: unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
