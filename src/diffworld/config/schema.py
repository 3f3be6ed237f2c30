"""The configuration schema: every hyperparameter of the method, typed and documented.

Defaults are the paper's values (``docs/method.md``, sections 1-6); section numbers below refer to it.
The schema is plain dataclasses so that OmegaConf can validate keys and types of command-line overrides
and so that code reads ``cfg.denoiser.sampler.num_steps`` with full type information.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from omegaconf import MISSING

from diffworld.games import DEFAULT_ACTION_REPEAT


class Precision(str, Enum):
    """Number format of the models' forward passes in training (the actor-critic's imagination included)."""

    fp32 = "fp32"
    bf16 = "bf16"


class DiffusionKind(str, Enum):
    """Which diffusion formulation the world model uses (docs/method.md §3; DDPM is the paper's ablation)."""

    edm = "edm"
    ddpm = "ddpm"


class DiffusionConvention(str, Enum):
    """How the EDM world model draws its initial noise and quantizes its outputs (docs/method.md §3).

    ``official``: as the official DIAMOND code, whose agents scored the paper's results: sampling starts
    from unit-variance noise while the first denoiser call is told sigma_max, and every denoiser output (each
    sampling step and the training loss's one-shot estimate) is clamped to [-1, 1] and floored to the 8-bit
    levels. ``edm``: the textbook EDM sampler: initial noise sigma_max x N(0, I), denoiser outputs left
    continuous, the sampled frame rounded once to the nearest 8-bit level at the end (and the training
    estimate rounded too).
    """

    official = "official"
    edm = "edm"


class RewardKind(str, Enum):
    """What the reward model predicts and the lambda-returns take (docs/method.md §4 and §9).

    ``sign``: the paper's: a classifier over sign(r) in {-1, 0, +1}, the class sampled in imagination, and
    the returns built on sign-clipped rewards (right for Atari, whose scores differ by orders of magnitude
    between games). ``value``: a regression of the reward itself (the environment's, summed over the action
    repeat), as MSE on ``symlog(r)``; imagination takes the predicted value ``symexp(output)`` and the
    returns take it unclipped (dense rewards: nearly every DeepMind Control step is rewarded, which sign(r)
    turns into a constant +1).
    """

    sign = "sign"
    value = "value"


class ReturnNormalization(str, Enum):
    """How the actor's REINFORCE weights (the advantages ``G - V``) are scaled (docs/method.md §5 and §9).

    ``none``: the paper's: as they are. ``percentile``: DreamerV3's: divided by ``max(1, P95 - P5)`` of the
    lambda-returns, the two percentiles each an exponential moving average (decay 0.99, from 0) of those of
    every actor-critic update's returns, kept in the actor-critic's state (so in checkpoints and agent
    folders); the critic still regresses the raw returns and the entropy bonus is unchanged. Beyond the
    paper: for rewards taken as values (``reward_model.reward_kind=value``), whose scale varies with the task
    (the ``dmc`` preset).
    """

    none = "none"
    percentile = "percentile"


@dataclass
class EnvConfig:
    """Atari 100k environment protocol (docs/method.md §1)."""

    frame_skip: int = 4
    """Agent steps repeat the action this many ALE frames; the observation max-pools the last two."""
    noop_max: int = 30
    """Resets play between 1 and ``noop_max`` no-op frames, drawn at random; 0 plays none."""
    size: int = 64
    """Observations are RGB, resized to ``size`` x ``size`` with area interpolation."""
    max_frames_per_episode: int = 108_000
    """Standard episode cap in ALE frames (27,000 agent steps at frame skip 4): the episode is truncated.
    For a continuous-control game (``dmc:``, ``gym:``), a cap in control steps (``action_repeat`` per agent
    step) on top of the task's own time limit (1,000 for DeepMind Control)."""
    action_repeat: int = DEFAULT_ACTION_REPEAT
    """Continuous-control games (``dmc:<domain>-<task>``, ``gym:<id>``): control steps per agent step, the
    action held and the rewards summed (2: the DeepMind Control setting of DreamerV3 and DrQ-v2). Atari
    uses ``frame_skip``; Catch and CatchContinuous have neither."""
    num_train_envs: int = 1
    """Environments stepped in parallel by the training collector."""
    num_test_envs: int = 1
    """Environments stepped in parallel for test episodes."""


@dataclass
class CollectionConfig:
    """Real-environment data collection (docs/method.md §1 and 2)."""

    total_env_steps: int = 100_000
    """Budget of real agent steps (Atari 100k: 400k frames)."""
    initial_min_steps: int = 5_000
    """The initial collection with the untrained (uniform) policy gathers at least this many steps."""
    initial_max_steps: int = 10_000
    """... and at most this many while waiting for enough minority-class rewards."""
    initial_min_minority_rewards: int = 10
    """Initial collection goes on until rewards of all sign classes but the most common number this many."""
    steps_per_epoch: int = 100
    """Real steps collected at the start of every epoch until the budget is spent."""
    train_epsilon: float = 0.01
    """Epsilon-greedy exploration of the training collector: with this probability a step's action is drawn
    uniformly (among the discrete actions, or in ``[-1, 1]^D`` for a continuous game) instead of from the
    policy."""
    test_epsilon: float = 0.0
    """Epsilon of test episodes and of the final evaluation."""
    test_every_epochs: int = 10
    """Test episodes and world-model test losses every this many epochs."""
    num_test_episodes: int = 4
    """Test episodes played at each periodic evaluation."""
    test_max_frames_per_episode: int | None = None
    """Frame cap of those periodic test episodes; None: ``env.max_frames_per_episode``, as in the paper. A
    lower cap bounds the time (and memory) of a test whose policy can play for hours, as a collapsed one
    repeating one action can; the final evaluation keeps ``env.max_frames_per_episode`` whatever this says."""
    num_final_episodes: int = 100
    """Test episodes of the final evaluation."""


@dataclass
class OptimizerConfig:
    """AdamW with linear warm-up and gradient clipping (docs/method.md §6)."""

    lr: float = 1e-4
    weight_decay: float = 1e-2
    eps: float = 1e-8
    warmup_steps: int = 100
    """Linear learning-rate warm-up from 0 over this many optimizer steps."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global L2 norm."""


class GradAccumulation(str, Enum):
    """How the losses of the ``grad_acc_steps`` batches of one update combine into its gradient."""

    sum = "sum"
    """The official CS:GO trainer: each batch's loss is backpropagated as it is, so the update's gradient is
    the sum of the batches' (and ``max_grad_norm`` clips that sum)."""
    mean = "mean"
    """The mean of the batches' gradients, as the official Atari trainer (where ``grad_acc_steps`` is 1)."""


@dataclass
class BatchesConfig:
    """The batches of one model's optimizer updates (``fitting.update.train_updates``)."""

    batch_size: int = 32
    grad_acc_steps: int = 1
    """Batches accumulated per optimizer step."""
    grad_accumulation: GradAccumulation = GradAccumulation.mean
    """``mean`` of the accumulated batches' gradients, or their ``sum`` (the official CS:GO trainer)."""


@dataclass
class WorldModelTrainingConfig(BatchesConfig):
    """How the diffusion world model trains, whichever product it is part of."""

    num_autoregressive_steps: int = 2
    """Consecutive predictions per training segment (segments hold num_cond_frames + this many frames), the
    later ones conditioned on the model's own one-shot estimates (docs/method.md §3). The official
    configurations count the predictions after the first: their ``num_autoregressive_steps`` is this minus
    one."""


@dataclass
class EpochTrainingConfig(BatchesConfig):
    """How much and on what one of the agent's models trains each epoch (docs/method.md §2)."""

    steps_first_epoch: int = 10_000
    """Optimizer steps in the first epoch (the models start from scratch on the initial dataset)."""
    steps_per_epoch: int = 400
    """Optimizer steps in every later epoch."""
    sample_weights: list[float] = field(default_factory=lambda: [0.1, 0.1, 0.1, 0.7])
    """Probability of each quarter of the episodes in collection order (the newest quarter last)."""


@dataclass
class DenoiserTrainingConfig(EpochTrainingConfig, WorldModelTrainingConfig):
    """How the agent's world model trains: the world model's settings and the agent's epochs."""


@dataclass
class SigmaDistributionConfig:
    """Training noise levels: sigma = exp(N(loc, scale^2)) clipped to [sigma_min, sigma_max] (docs/method.md
    §3)."""

    loc: float = -0.4
    scale: float = 1.2
    sigma_min: float = 0.002
    sigma_max: float = 20.0


@dataclass
class SamplerConfig:
    """Sampling of the next frame: Karras schedule, Euler or Heun, optional churn (docs/method.md §3; EDM
    Alg. 2)."""

    num_steps: int = 3
    """Denoising steps (number of denoiser calls with Euler)."""
    sigma_min: float = 0.002
    sigma_max: float = 5.0
    rho: float = 7.0
    order: int = 1
    """1: Euler; 2: Heun (a second-order correction on every step but the last)."""
    s_churn: float = 0.0
    """Stochastic churn of EDM Algorithm 2 (0: deterministic sampling)."""
    s_tmin: float = 0.0
    s_tmax: float = float("inf")
    s_noise: float = 1.0
    s_cond: float = 0.0
    """The conditioning frames get Gaussian noise of this std before every denoising step (on top of that of
    the steps before), and the network is told this level: the official CS:GO sampler's 0.005, for a world
    model trained with ``noise_previous_obs``. 0: clean conditioning frames (told level 0 where the network
    has that input)."""


@dataclass
class WorldModelConfig:
    """The conditioned EDM world model: U-Net F and its EDM wrapper (docs/method.md §3), the one model of the
    agent (``DenoiserConfig``) and of the engine (``engine.config.EngineDenoiserConfig``). The defaults are
    the paper's Atari ones; each product's config sets its own."""

    num_cond_frames: int = 4
    """L: past frames and actions the next frame is conditioned on."""
    cond_channels: int = 256
    """Width of the conditioning vector; Fourier features of c_noise have this size, each of the L action
    embeddings ``cond_channels // num_cond_frames``."""
    channels: list[int] = field(default_factory=lambda: [64, 64, 64, 64])
    """U-Net channels per resolution level."""
    depths: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    """Residual blocks per level on the way down (the way up mirrors them)."""
    attn_depths: list[bool] = field(default_factory=lambda: [False, False, False, False])
    """Self-attention in the blocks of each level (the paper: none; the middle blocks always have it)."""
    convention: DiffusionConvention = DiffusionConvention.official
    """Initial noise and quantization of the EDM sampler and training estimate: ``official`` (the default, as
    the published models were trained) or ``edm`` (the textbook choice); see ``DiffusionConvention``."""
    sigma_data: float = 0.5
    sigma_offset_noise: float = 0.3
    """Std of the per-image, per-channel constant added to the Gaussian noise (offset noise)."""
    noise_previous_obs: bool = False
    """Noise augmentation of the conditioning frames in training: per sample, a level sigma_cond drawn from
    ``sigma_cond_distribution``, the L past frames noised at it (offset noise included), and c_noise_cond =
    log(sigma_cond) / 4 fed to the network beside c_noise. Makes long autoregressive rollouts robust to the
    model's own errors (the official CS:GO recipe; the engine's models only, whose network has that
    input)."""
    sigma_distribution: SigmaDistributionConfig = field(default_factory=SigmaDistributionConfig)
    sigma_cond_distribution: SigmaDistributionConfig | None = None
    """The law of sigma_cond (``noise_previous_obs``); None: ``sigma_distribution``'s, as the official CS:GO
    recipe draws both levels from one law. A law of its own keeps the conditioning frames' noise at the
    official levels when the training sigmas move (the engine's ``cpu`` preset)."""
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    training: WorldModelTrainingConfig = field(default_factory=WorldModelTrainingConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)


@dataclass
class DenoiserConfig(WorldModelConfig):
    """The agent's world model: ``WorldModelConfig`` in the Atari layout, EDM or the DDPM ablation
    (docs/method.md §3), trained in the agent's epochs."""

    training: DenoiserTrainingConfig = field(default_factory=DenoiserTrainingConfig)
    kind: DiffusionKind = DiffusionKind.edm
    """``edm`` (the paper) or ``ddpm`` (the paper's ablation, same network)."""
    ddpm_num_train_timesteps: int = 1000
    ddpm_beta_start: float = 1e-4
    ddpm_beta_end: float = 0.02


@dataclass
class RewardTerminationConfig:
    """Reward and termination model: conv encoder of frame pairs, LSTM, a reward head and a termination
    classifier head (docs/method.md §4)."""

    reward_kind: RewardKind = RewardKind.sign
    """``sign``: classify sign(r) and sign-clip the returns (the paper's); ``value``: regress symlog(r) and
    take the predicted reward as it is (dense rewards: the ``dmc`` preset). See ``RewardKind``."""

    channels: list[int] = field(default_factory=lambda: [32, 32, 32, 32])
    depths: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    attn_depths: list[bool] = field(default_factory=lambda: [False, False, False, False])
    cond_channels: int = 128
    """Width of the action embedding that drives adaptive group norm."""
    lstm_dim: int = 512
    training: EpochTrainingConfig = field(default_factory=EpochTrainingConfig)
    optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(max_grad_norm=100.0))


@dataclass
class ContinuousPolicyConfig:
    """The policy over continuous actions: a tanh-squashed diagonal Gaussian (docs/method.md §9).

    ``u ~ N(mean, std^2)``, the action ``tanh(u)`` in ``[-1, 1]^D``; the actor head gives ``mean`` and
    ``x``, and ``std = min_std + (max_std - min_std) * sigmoid(x + std_offset)`` (DreamerV3's bounded std),
    so the zero-initialized head starts every component at ``mean = 0``, ``std = min_std + (max_std -
    min_std) * sigmoid(std_offset)`` (0.89 with the defaults): a broad policy, as the discrete one starts
    uniform."""

    min_std: float = 0.1
    max_std: float = 1.0
    std_offset: float = 2.0


@dataclass
class ActorCriticConfig:
    """Actor-critic trained in imagination with lambda-returns and REINFORCE (docs/method.md §5)."""

    channels: list[int] = field(default_factory=lambda: [32, 32, 64, 64])
    lstm_dim: int = 512
    gamma: float = 0.985
    lambda_: float = 0.95
    value_loss_weight: float = 1.0
    entropy_weight: float = 0.001
    return_normalization: ReturnNormalization = ReturnNormalization.none
    """``none`` (the paper's) or ``percentile`` (DreamerV3's: the advantages divided by ``max(1, P95 - P5)``
    of the returns, for value rewards). See ``ReturnNormalization``."""
    temperature: float = 1.0
    """Temperature of the policy's action sampling in the real environment: of the softmax over discrete
    actions; for continuous ones, the factor of the pre-squash std (towards 0: the deterministic
    ``tanh(mean)``)."""
    temperature_per_game: dict[str, float] = field(default_factory=lambda: {"Freeway": 0.01})
    """Per-game temperature overrides: the IRIS Freeway trick (IRIS paper, Appendix H) that DIAMOND used."""
    imagination_horizon: int = 15
    """H: imagined steps per trajectory."""
    continuous: ContinuousPolicyConfig = field(default_factory=ContinuousPolicyConfig)
    """The policy over the actions of a continuous-control game (unused for discrete actions)."""
    training: EpochTrainingConfig = field(
        default_factory=lambda: EpochTrainingConfig(steps_first_epoch=5_000)
    )
    optimizer: OptimizerConfig = field(
        default_factory=lambda: OptimizerConfig(weight_decay=0.0, max_grad_norm=100.0)
    )


@dataclass
class TrainingConfig:
    """The schedule of a run (docs/method.md §2)."""

    num_final_epochs: int = 50
    """Epochs that train without collecting once the real-step budget is spent."""
    model_free: bool = False
    """Train the actor-critic on the real environment instead of in imagination (the paper's baseline switch).

    Same loss (docs/method.md §5) on real rollouts of ``actor_critic.imagination_horizon`` steps in
    ``actor_critic.training.batch_size`` environments (life loss terminal, as in training collection), the
    LSTM state carried from rollout to rollout. Their steps are spent from ``collection.total_env_steps``:
    no initial collection and no collector steps, the world model is not trained, and epochs of
    ``actor_critic.training`` steps (each ``batch_size * imagination_horizon`` real steps) go on until the
    budget is spent (the paper's settings: 209 updates, all in the first epoch; lower ``steps_first_epoch``
    and ``steps_per_epoch`` for more metrics records); ``num_final_epochs`` does not apply.
    """
    save_agent_every: int = 5
    """Keep a copy of the agent weights every this many epochs."""
    diagnostics: bool = True
    """Every epoch, between the world model's training and the actor-critic's, measure what decides whether
    the agent goes on learning (``diffworld.agent.diagnostics``; README, "A first check when an agent
    does not learn"): the world model's losses and reward recall on the last collecting epoch's steps
    against older ones, the reward rate the policy imagines from those steps, and the gradient norms of the
    actor's and the critic's terms of the loss apart (``<model>/diagnostic/...`` metrics). A few batches;
    they change nothing in the training. Not with ``model_free``, which has no world model."""
    precision: Precision = Precision.fp32
    """``bf16``: training's forward passes (the world model's imagination included) run under
    ``torch.autocast`` to bfloat16: convolutions, linear layers and matrix products in bfloat16, norms,
    softmax and losses in float32; weights, gradients and optimizer states stay float32. About twice as fast
    where the hardware has bfloat16 arithmetic (CPUs with AVX512-BF16 or AMX, Ampere GPUs and later), but
    changes results: the paper's settings keep ``fp32``. Collection, tests and evaluation run in float32.
    """


@dataclass
class LoggingConfig:
    tensorboard: bool = True
    wandb: bool = False
    """Log to Weights & Biases too, the same metrics and the run's configuration (needs the ``wandb`` extra,
    and a login or ``WANDB_MODE=offline``)."""
    wandb_project: str = "diffworld"
    video_steps: int = 50
    """At each test, a video of the first test episode beside the world model's imagination from the same
    start (its first L frames and actions, then its actions) goes to TensorBoard, this many predicted frames
    long (0: no video). Costs this many batch-1 samplings of the next frame."""


@dataclass
class Config:
    """A whole run. ``game`` is required; everything else defaults to the paper's settings."""

    game: str = MISSING
    """Atari game, named as you like: ``Breakout``, ``breakout``, ``BreakoutNoFrameskip-v4``; ``Catch``,
    ``CatchContinuous``; a DeepMind Control task ``dmc:<domain>-<task>`` (``dmc:cartpole-swingup``); a
    Gymnasium environment with ``Box`` actions ``gym:<id>`` (``gym:Pendulum-v1``), from pixels."""
    seed: int = 0
    """The one seed of the run: python, numpy, torch and environment seeds all derive from it."""
    preset: str = "atari100k"
    """Preset the run started from (``atari100k``, ``quick`` or ``smoke``); recorded for reference."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``."""
    run_dir: str | None = None
    """Run folder; default ``runs/<game>/<date>_<time>_s<seed>``."""
    env: EnvConfig = field(default_factory=EnvConfig)
    collection: CollectionConfig = field(default_factory=CollectionConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    reward_model: RewardTerminationConfig = field(default_factory=RewardTerminationConfig)
    actor_critic: ActorCriticConfig = field(default_factory=ActorCriticConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def policy_temperature(self) -> float:
        """The temperature of the policy's action sampling in this game's real environment: its
        ``actor_critic.temperature_per_game`` entry, else ``actor_critic.temperature``."""
        return self.actor_critic.temperature_per_game.get(self.game, self.actor_critic.temperature)
