"""Frame rate of ``diffworld play`` in the world model with the policy in control, headless.

    python benchmarks/play_fps.py [--preset atari100k] [--game Breakout] [--steps 100] [--threads N]

Runs the real play loop (``PlayApp`` with SDL's dummy video driver, no frame-rate cap) on freshly built
models of the preset (the speed does not depend on the weights): every frame is one policy step, one
world-model step (``denoiser.sampler.num_steps`` denoiser calls, then the reward/termination model) and the
drawing of the window. Prints frames per second and the time per frame of each part. The paper's settings
are the default: the atari100k denoiser with 3 Euler steps, batch 1.

An untrained termination model ends about half of the imagined steps, and every restart draws new context
frames and burns the reward model in on them again; a trained one ends an imagined episode rarely. So the
termination model is told never to end one here (``--keep-terminations`` keeps it as it is).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

from diffworld.agent import Agent
from diffworld.agent.play import PlayApp, build_session
from diffworld.agent.trained import TrainedAgent
from diffworld.config import build_config
from diffworld.envs import make_atari_env


def _per_call(fn: object, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()  # type: ignore[operator]
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--game", default="Breakout")
    parser.add_argument("--preset", default="atari100k")
    parser.add_argument("--steps", type=int, default=100, help="timed frames")
    parser.add_argument("--warmup", type=int, default=5, help="untimed frames first")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--scale", type=int, default=8)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--keep-terminations", action="store_true", help="let the termination model end episodes"
    )
    parser.add_argument(
        "overrides", nargs="*", help="configuration overrides, e.g. denoiser.sampler.num_steps=1"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = build_config([f"game={args.game}", f"preset={args.preset}", *args.overrides])
    probe = make_atari_env(cfg.game)
    num_actions = len(probe.action_meanings)
    probe.close()
    device = torch.device(args.device)
    torch.manual_seed(0)
    agent = Agent.build(cfg, num_actions).to(device).eval()
    if not args.keep_terminations:
        predict = agent.reward_model.predict

        def never_end(*a: Any, **k: Any) -> Any:
            logits_rew, logits_end, state = predict(*a, **k)
            never = torch.stack(
                [torch.zeros_like(logits_end[..., 0]), torch.full_like(logits_end[..., 1], -1e4)], -1
            )
            return logits_rew, never, state

        agent.reward_model.predict = never_end  # type: ignore[method-assign]
    trained = TrainedAgent(agent, cfg, num_actions, device, epoch=None, env_steps=0, train_seconds=None)
    unused = Path(tempfile.gettempdir()) / "play_fps_unused"  # nothing is recorded
    session = build_session(trained, None, horizon=1000, record_dir=unused, log=lambda _: None)
    app = PlayApp(session, scale=args.scale, fps=0)
    app.open()
    for _ in range(args.warmup):
        app.frame()
    start = time.perf_counter()
    for _ in range(args.steps):
        app.frame()
    elapsed = time.perf_counter() - start

    # The parts, timed alone on the same state.
    wm = session.env
    obs = torch.zeros(1, 3, cfg.env.size, cfg.env.size, device=device)
    with torch.no_grad():
        world_model_s = _per_call(lambda: wm.step(0), 10)
        policy_s = _per_call(lambda: agent.actor_critic.step(obs), 10)
    draw_s = _per_call(lambda: app.window.draw(session.frame, session.header(1.0)), 20)
    app.close()

    result = {
        "game": cfg.game,
        "preset": args.preset,
        "denoising_steps": cfg.denoiser.sampler.num_steps,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "terminations": args.keep_terminations,
        "frames": args.steps,
        "seconds": elapsed,
        "frames_per_s": args.steps / elapsed,
        "world_model_step_ms": 1000 * world_model_s,
        "policy_step_ms": 1000 * policy_s,
        "draw_ms": 1000 * draw_s,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
    }
    print(
        f"{cfg.game}, preset {args.preset}, {result['denoising_steps']} denoising steps, {device}, "
        f"{result['torch_threads']} torch threads: {result['frames_per_s']:.2f} frames/s "
        f"({args.steps} frames in {elapsed:.1f} s); per frame: "
        f"world model {result['world_model_step_ms']:.0f} ms, "
        f"policy {result['policy_step_ms']:.1f} ms, drawing {result['draw_ms']:.1f} ms; "
        f"load average {result['load_average_1min']:.1f}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
