"""Frame rate of ``diffworld play`` on a trained engine, headless.

    python benchmarks/engine_play_fps.py <engine folder> [--steps 100] [--threads N] [--json out.json]

Runs the real play loop (``EnginePlayApp`` with SDL's dummy video driver, no frame-rate cap) with the
dataset's own actions in control (the player's keys would cost the same): every frame is one next-frame
prediction at low resolution (``denoiser.sampler.num_steps`` denoiser calls), one upsampling to full
resolution (the upsampler's own steps) and the drawing of the window. Prints frames per second and the time
per frame of each part, measured alone on the same state afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

from diffworld.engine.play import EnginePlayApp, build_engine_session
from diffworld.utils.atomic import atomic_write_text
from diffworld.viz.play_core import PlayCommand
from diffworld.world_model_folder import PlayOptions


def _per_call(fn: Callable[[], object], repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("engine", type=Path, help="an engine folder (diffworld engine train's run folder)")
    parser.add_argument("--steps", type=int, default=100, help="timed frames")
    parser.add_argument("--warmup", type=int, default=5, help="untimed frames first")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--denoising-steps", type=int, help="of the next-frame model (default: the engine's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    unused = Path(tempfile.gettempdir()) / "engine_play_fps_unused"  # nothing is recorded
    options = PlayOptions(
        horizon=1 << 20, record_dir=unused, device=args.device, denoising_steps=args.denoising_steps
    )
    session = build_engine_session(args.engine, options, log=lambda _: None)
    session.handle(PlayCommand.TOGGLE_CONTROLLER)  # the dataset's actions, replayed
    app = EnginePlayApp(session, scale=args.scale, fps=0)
    app.open()
    for _ in range(args.warmup):
        app.frame()
    start = time.perf_counter()
    for _ in range(args.steps):
        app.frame()
    elapsed = time.perf_counter() - start

    # The parts, timed alone on the current state.
    engine = session.engine
    imagination = session._imagination  # the play loop's state, read here only to time its parts
    assert imagination is not None
    action = torch.tensor(session.last_action, device=session.device)[None]
    with torch.no_grad():
        obs, act = imagination.obs, torch.cat([imagination.past_actions, action[:, None]], dim=1)
        low = engine.predictor.predict_next(obs, act)
        predict_s = _per_call(lambda: engine.predictor.predict_next(obs, act), 10)
        upsample_s = 0.0
        if engine.upsampler is not None and imagination.obs_full is not None:
            upsampler, prev_full = engine.upsampler, imagination.obs_full
            upsample_s = _per_call(lambda: upsampler.upsample(low, prev_full), 10)
    draw_s = _per_call(lambda: app.window.draw(session.frame, session.header(1.0)), 20)
    app.close()

    h, w = session.frame.shape[:2]
    result = {
        "engine": str(args.engine),
        "frame_size": [h, w],
        "low_res": list(engine.low_res),
        "denoising_steps": session.denoising_steps,
        "device": str(session.device),
        "torch_threads": torch.get_num_threads(),
        "frames": args.steps,
        "seconds": elapsed,
        "frames_per_s": args.steps / elapsed,
        "predict_ms": 1000 * predict_s,
        "upsample_ms": 1000 * upsample_s,
        "draw_ms": 1000 * draw_s,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
    }
    print(
        f"{args.engine}: {h}x{w} frames from {engine.low_res[0]}x{engine.low_res[1]}, "
        f"{session.denoising_steps} denoising step(s), {session.device}, {result['torch_threads']} torch "
        f"threads: {result['frames_per_s']:.2f} frames/s ({args.steps} frames in {elapsed:.1f} s); per "
        f"frame: next frame {result['predict_ms']:.0f} ms, upsampling {result['upsample_ms']:.0f} ms, "
        f"drawing {result['draw_ms']:.1f} ms; load average {result['load_average_1min']:.1f}"
    )
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
