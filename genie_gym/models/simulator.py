"""Batched world simulation: B independent worlds, one batched model call per MaskGIT step for all of them.

Each world holds a sliding window of `context_frames` frames: the frame being generated attends to at most
`context_frames - 1` past frames. Two execution paths give the same frames while a world's whole history fits in
that window (its first `context_frames - 1` steps), token for token:

- `use_cache=True` (default): the dynamics transformer and the tokenizer decoder keep the temporal keys/values of
  past frames in ring-buffer KV caches, so a step costs `maskgit_steps` single-frame dynamics passes, one commit pass
  and one single-frame decoder pass, whatever the history length. Past the window the cache behaves like a sliding-
  window transformer: a cached frame's keys were computed when that frame could still see frames that have since left
  the window, so information from older frames still flows in through deeper layers.
- `use_cache=False`: each MaskGIT pass recomputes the whole window from tokens (`DynamicsModel.forward`) and the
  decoder decodes the whole window (`VideoTokenizer.decode`). Past the window this is hard truncation: the oldest
  kept frame is treated as a first frame ("no action"), and nothing older has any influence. It is the reference the
  cached path is tested against, and the baseline of `benchmarks/env_speed.py` (`full_recompute_fps`).

`compile=True` runs the per-frame calls of the cached path (`DynamicsModel.forward_step` and `commit_step`,
`VideoTokenizer.decode_step`) through `torch.compile` (static shapes: one graph per call pattern, compiled on the
first step, no recompiles afterwards). Where compiling fails (no C++ compiler, an unsupported platform) it warns once
and runs eager; the frames are those of the eager path either way (tested token for token in float32).

So beyond `context_frames - 1` steps the two paths are different (both reasonable) approximations of an unbounded
context and their frames may diverge. Randomness comes from one `torch.Generator` per world, seeded at reset, so a
world produces the same frames whether it runs alone or in a batch, and whichever path runs it.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from genie_gym.errors import ConfigError
from genie_gym.models.frames import to_float, to_uint8
from genie_gym.models.maskgit import maskgit_sample
from genie_gym.models.st_transformer import TemporalKVCache
from genie_gym.models.world_model import MAX_FRAMES, WorldModel
from genie_gym.utils.device import available_memory_bytes, resolve_device

# precision -> autocast dtype (None: plain float32). bf16 runs the dynamics matmuls in half the bytes; its speed-up
# on this CPU is measured by `python benchmarks/env_speed.py` (`single_env_fps_bf16`).
PRECISIONS: dict[str, torch.dtype | None] = {"float32": None, "bfloat16": torch.bfloat16}
SCHEDULES = ("frame", "cell")  # MaskGIT's ranking over the frame (the paper), or inside each grid cell (maskgit.py)


class CompiledOrEager:
    """`fn` through `torch.compile`; if compiling fails, one warning and `fn` itself from then on. Compilation
    happens before the compiled graph runs, so a failure leaves every cache untouched."""

    def __init__(self, fn: Callable[..., torch.Tensor], name: str):
        self.eager, self.name, self.failed = fn, name, False
        # One graph per (batch size, precision, call pattern): a process running envs of several sizes needs more
        # than dynamo's default 8 per function, beyond which it would silently run eager.
        import torch._dynamo

        cfg = torch._dynamo.config
        limit = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"  # older torch
        setattr(cfg, limit, max(getattr(cfg, limit), 64))
        self.compiled = torch.compile(fn, dynamic=False)

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        if not self.failed:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as e:  # the compiler's own errors (BackendCompilerFailed, missing cc, ...)
                self.failed = True
                warnings.warn(f"torch.compile of {self.name} failed ({type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}); running eager, "
                              "which gives the same frames", RuntimeWarning, stacklevel=2)
        return self.eager(*args, **kwargs)


def _load_into(cache: TemporalKVCache, idx_K: torch.Tensor, sub: TemporalKVCache) -> None:
    """Copy a K-element cache into rows `idx_K` of a B-element cache (a partial reset of some worlds)."""
    if not cache.k:
        _, N, H, _, hd = sub.k[0].shape
        cache.allocate(N, H, hd)
    for layer in range(cache.num_layers):
        cache.k[layer][idx_K] = sub.k[layer]
        cache.v[layer][idx_K] = sub.v[layer]
    cache.valid_BM[idx_K] = sub.valid_BM
    cache.t_B[idx_K] = sub.t_B


def check_sampling(world_model: WorldModel, maskgit_steps: object = None, schedule: object = None,
                   temperature: object = None, precision: object = "float32") -> tuple[int, str, float]:
    """The sampling settings (None: the model's), each checked with a clear ConfigError; returns the resolved
    (maskgit_steps, schedule, temperature). The Simulator checks them when built, `genie-gym eval` before any work,
    and the SB3 adapter when `set_attr` changes one (the others passed as they are)."""
    sampling, cell = world_model.config.sampling, world_model.config.tokenizer.groups  # tokens per grid cell
    steps = sampling.maskgit_steps if maskgit_steps is None else maskgit_steps
    schedule = sampling.schedule if schedule is None else schedule
    temperature = sampling.temperature if temperature is None else temperature
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ConfigError(f"maskgit_steps must be an int >= 1 (Genie uses 25), got {steps!r}")
    if schedule not in SCHEDULES:
        raise ConfigError(f"maskgit_schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
    if schedule == "cell" and steps > cell:
        raise ConfigError(f"maskgit_schedule='cell' decides at least one of a grid cell's {cell} tokens per step: "
                          f"maskgit_steps must be 1..{cell}, got {steps} (or use maskgit_schedule='frame')")
    if not isinstance(temperature, (int, float)) or not np.isfinite(temperature) or temperature < 0:
        raise ConfigError(f"temperature must be a finite float >= 0 (0 = greedy), got {temperature!r}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    return int(steps), str(schedule), float(temperature)


def bytes_per_world(world_model: WorldModel, context_frames: int) -> int:
    """What one world holds while stepping, float32: the dynamics and decoder key/value caches, one MaskGIT pass's
    activations and logits, and its frames (an estimate for the up-front memory check)."""
    cfg, N = world_model.config, world_model.config.tokens_per_frame
    positions = N // cfg.tokenizer.groups
    caches = 2 * context_frames * positions * (cfg.dynamics.num_layers * cfg.dynamics.d_model
                                               + cfg.tokenizer.num_layers * cfg.tokenizer.d_model)
    activations = 8 * positions * cfg.dynamics.d_model + N * cfg.tokenizer.codebook_size * 3
    frames = 4 * 3 * world_model.image_size ** 2 * 8 + 3 * world_model.image_size ** 2 * 2 * cfg.heads.frames * \
        cfg.heads.enabled  # + the heads' uint8 input
    return 4 * (caches + activations) + frames


def check_memory(world_model: WorldModel, num_worlds: int, context_frames: int, device: torch.device) -> None:
    """A clear error before allocating when `num_worlds` worlds cannot fit in the device's free memory."""
    need = bytes_per_world(world_model, context_frames) * num_worlds
    free = available_memory_bytes(device)
    if free is not None and need > free:
        fit = max(1, free // bytes_per_world(world_model, context_frames))
        raise ConfigError(f"{num_worlds} worlds need about {need / 2**30:.1f} GiB on {device} but {free / 2**30:.1f} "
                          f"GiB are free; use at most ~{fit} worlds (num_envs), or fewer context_frames")


class Simulator:
    """`num_worlds` generated worlds stepped together. Call `reset` on every world before its first `step`."""

    def __init__(self, world_model: WorldModel, num_worlds: int = 1, maskgit_steps: int | None = None,
                 temperature: float | None = None, context_frames: int | None = None,
                 device: str | torch.device = "cpu", use_cache: bool = True, precision: str = "float32",
                 compile: bool = False, maskgit_schedule: str | None = None):
        context_frames = world_model.config.sampling.context_frames if context_frames is None else context_frames
        if not isinstance(num_worlds, (int, np.integer)) or num_worlds < 1:
            raise ConfigError(f"num_worlds must be a positive int, got {num_worlds!r}")
        maskgit_steps, maskgit_schedule, temperature = check_sampling(world_model, maskgit_steps, maskgit_schedule,
                                                                      temperature, precision)
        if not isinstance(context_frames, (int, np.integer)) or not 2 <= context_frames <= MAX_FRAMES:
            raise ConfigError(f"context_frames must be an int in [2, {MAX_FRAMES}] (frames the model sees, the "
                              f"new one included; Genie uses 16), got {context_frames!r}")
        if not isinstance(compile, bool):
            raise ConfigError(f"compile must be True or False, got {compile!r}")
        self.device = resolve_device(str(device))
        check_memory(world_model, int(num_worlds), int(context_frames), self.device)
        self.precision = precision
        self._amp_dtype = PRECISIONS[precision]
        self.model = world_model.to(self.device).eval()
        self.num_worlds = int(num_worlds)
        self.maskgit_steps = int(maskgit_steps)
        self.temperature = float(temperature)
        self.context_frames = int(context_frames)
        self.maskgit_schedule = maskgit_schedule
        self._cell_size = world_model.config.tokenizer.groups if maskgit_schedule == "cell" else 1
        self.use_cache = bool(use_cache)
        self.compile = compile
        dyn, tok = world_model.dynamics, world_model.tokenizer
        self._dyn_step = CompiledOrEager(dyn.forward_step, "the dynamics step") if compile else dyn.forward_step
        self._dyn_commit = CompiledOrEager(dyn.commit_step, "the dynamics commit") if compile else dyn.commit_step
        self._dec_step = CompiledOrEager(tok.decode_step, "the decoder step") if compile else tok.decode_step
        self.num_actions = world_model.num_actions
        self.tokens_per_frame = world_model.config.tokens_per_frame
        self.mask_token_id = world_model.dynamics.mask_token_id
        self.no_action_id = world_model.dynamics.no_action_id
        B, W, N = self.num_worlds, self.context_frames, self.tokens_per_frame
        self.generators = [torch.Generator(device=self.device) for _ in range(B)]
        # the event heads' input: each world's last K frames (prompt, then generated), uint8 as the env returns them
        self.heads_frames = world_model.config.heads.frames if world_model.heads is not None else 0
        self.recent_BKHWC: torch.Tensor | None = None
        self.is_ready_B = np.zeros(B, dtype=bool)  # reset since creation
        self.steps_B = np.zeros(B, dtype=np.int64)  # frames generated since the world's reset
        with torch.inference_mode():
            if self.use_cache:
                self.dyn_cache = self._new_cache(world_model.dynamics.transformer, B)
                self.dec_cache = self._new_cache(world_model.tokenizer.decoder, B)
            else:
                # The last W-1 frames of each world (oldest first) and the action that led to each frame.
                self.hist_tokens_BWN = torch.zeros(B, W - 1, N, dtype=torch.long, device=self.device)
                self.hist_actions_BW = torch.full((B, W - 1), self.no_action_id, dtype=torch.long,
                                                  device=self.device)
                self.hist_len_B = torch.zeros(B, dtype=torch.long, device=self.device)

    def _new_cache(self, transformer: torch.nn.Module, batch_size: int) -> TemporalKVCache:
        return transformer.new_cache(batch_size, self.context_frames, self.device, self._amp_dtype or torch.float32)

    @contextlib.contextmanager
    def _compute(self) -> Iterator[None]:
        """Inference mode, plus bf16 autocast when `precision="bfloat16"` (one weight cast per step, cached)."""
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self._amp_dtype or torch.bfloat16,
                                                    enabled=self._amp_dtype is not None):
            yield

    # --- reset --------------------------------------------------------------------------------------------------
    def reset(self, indices: Sequence[int] | np.ndarray | None, prompts_BHWC_uint8: np.ndarray | torch.Tensor,
              seeds: Sequence[int], prompt_actions: np.ndarray | torch.Tensor | None = None) -> None:
        """Start worlds `indices` (all if None) from prompts, seeding each world's RNG.

        A prompt is one frame, (K, H, W, 3) uint8, or C real frames of context, (K, C, H, W, 3) uint8, with the
        C - 1 latent actions between them in `prompt_actions` (K, C-1) (`prompt_actions[:, c]` leads from frame c
        to c + 1, as everywhere). The next `step` generates the frame after the last prompt frame.
        """
        idx = np.arange(self.num_worlds) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        K = len(idx)
        if K == 0:
            return
        if idx.min() < 0 or idx.max() >= self.num_worlds or len(set(idx.tolist())) != K:
            raise IndexError(f"reset indices must be distinct worlds in [0, {self.num_worlds}), got {idx.tolist()}")
        S = self.model.image_size
        prompts = torch.as_tensor(np.asarray(prompts_BHWC_uint8)) if not torch.is_tensor(prompts_BHWC_uint8) \
            else prompts_BHWC_uint8
        if prompts.dim() == 4:
            prompts = prompts[:, None]
        C = prompts.shape[1] if prompts.dim() == 5 else 0
        if prompts.dtype != torch.uint8 or prompts.dim() != 5 or tuple(prompts.shape[2:]) != (S, S, 3) \
                or prompts.shape[0] != K or C < 1:
            raise ValueError(f"prompts must be uint8 of shape ({K}, {S}, {S}, 3) or ({K}, C, {S}, {S}, 3) with C "
                             f"context frames, got {prompts.dtype} {tuple(prompts_BHWC_uint8.shape)}; convert images "
                             "with genie_gym.envs.prompts.load_prompt")
        if C > self.context_frames - 1:
            raise ValueError(f"{C} prompt frames do not fit a context of {self.context_frames} frames (the new one "
                             f"included); pass at most {self.context_frames - 1} or raise context_frames")
        acts = torch.zeros(K, 0, dtype=torch.long) if prompt_actions is None else \
            torch.as_tensor(np.asarray(prompt_actions)).long().reshape(K, -1)
        if acts.shape[1] != C - 1 or (acts.numel() and (acts.min() < 0 or acts.max() >= self.num_actions)):
            raise ValueError(f"{C} prompt frames need prompt_actions of shape ({K}, {C - 1}) with values in "
                             f"[0, {self.num_actions}), got {tuple(acts.shape)}")
        if len(seeds) != K:
            raise ValueError(f"got {len(seeds)} seeds for {K} worlds; pass one seed per reset world")
        for i, seed in zip(idx, seeds, strict=True):
            self.generators[i].manual_seed(int(seed) % (2**63))
        with self._compute():
            tokens_KCN = self.model.tokenizer.encode(to_float(prompts.to(self.device)))
            idx_t = torch.as_tensor(idx, device=self.device)
            no_action_K1 = torch.full((K, 1), self.no_action_id, dtype=torch.long, device=self.device)
            acts_KC = torch.cat([no_action_K1, acts.to(self.device)], dim=1)  # acts_KC[:, c] led to frame c
            if self.use_cache:
                if K == self.num_worlds and np.array_equal(idx, np.arange(K)):
                    dyn, dec = self.dyn_cache, self.dec_cache
                    dyn.reset()
                    dec.reset()
                else:  # run the prompt frames on K-element caches, then copy them into the worlds' rows
                    dyn = self._new_cache(self.model.dynamics.transformer, K)
                    dec = self._new_cache(self.model.tokenizer.decoder, K)
                for c in range(C):
                    self.model.dynamics.commit_step(tokens_KCN[:, c], acts_KC[:, c], dyn)
                    self.model.tokenizer.decode_step(tokens_KCN[:, c], dec, commit=True)
                if dyn is not self.dyn_cache:
                    _load_into(self.dyn_cache, idx_t, dyn)
                    _load_into(self.dec_cache, idx_t, dec)
            else:
                self.hist_tokens_BWN[idx_t] = 0
                self.hist_tokens_BWN[idx_t, :C] = tokens_KCN
                self.hist_actions_BW[idx_t] = self.no_action_id
                self.hist_actions_BW[idx_t, :C] = acts_KC
                self.hist_len_B[idx_t] = C
            if self.heads_frames:  # the last K prompt frames, the first repeated when there are fewer
                if self.recent_BKHWC is None:
                    self.recent_BKHWC = torch.zeros(self.num_worlds, self.heads_frames, S, S, 3, dtype=torch.uint8,
                                                    device=self.device)
                last_KC = torch.arange(C - self.heads_frames, C).clamp(min=0)
                self.recent_BKHWC[idx_t] = prompts[:, last_KC].to(self.device)
        self.is_ready_B[idx] = True
        self.steps_B[idx] = 0

    # --- step ---------------------------------------------------------------------------------------------------
    def step(self, actions_B: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
        """Generate the next frame of every world: (B, H, W, 3) uint8. `actions_B[i]` in [0, num_actions)."""
        actions = np.asarray(actions_B.cpu() if torch.is_tensor(actions_B) else actions_B)
        if actions.shape != (self.num_worlds,) or not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(f"actions must be an int array of shape ({self.num_worlds},), got {actions.dtype} "
                             f"{actions.shape}")
        if actions.min() < 0 or actions.max() >= self.num_actions:
            raise ValueError(f"actions must be in [0, {self.num_actions}), got {actions.tolist()}")
        if not self.is_ready_B.all():
            raise RuntimeError(f"worlds {np.flatnonzero(~self.is_ready_B).tolist()} were never reset; call "
                               "reset() on every world before step()")
        with self._compute():
            actions_t = torch.as_tensor(actions, dtype=torch.long, device=self.device)
            frames_BHWC = self._step_cached(actions_t) if self.use_cache else self._step_full(actions_t)
            out_BHWC = to_uint8(frames_BHWC.float())
            if self.heads_frames:  # the heads read the frames as the env returns them
                self.recent_BKHWC = torch.cat([self.recent_BKHWC[:, 1:], out_BHWC[:, None]], dim=1)
            out = out_BHWC.cpu().numpy()
        self.steps_B += 1
        return out

    def event_probs(self) -> np.ndarray | None:
        """(B, 2) probabilities of (terminal, reward) for the frames the last `step` generated, from the model's
        event heads on each world's last `config.heads.frames` frames; None for a model without heads (or before
        the first step)."""
        if not self.heads_frames or not self.steps_B.any():
            return None
        with self._compute():
            return torch.sigmoid(self.model.heads(to_float(self.recent_BKHWC)).float()).cpu().numpy()

    def _sample(self, logits_fn, batch_size: int, generators: list[torch.Generator]) -> torch.Tensor:
        return maskgit_sample(logits_fn, batch_size, self.tokens_per_frame, steps=self.maskgit_steps,
                              temperature=self.temperature, generators=generators,
                              mask_token_id=self.mask_token_id, device=self.device, cell_size=self._cell_size)

    def _step_cached(self, actions_B: torch.Tensor) -> torch.Tensor:
        def logits_fn(tokens_BN: torch.Tensor, mask_BN: torch.Tensor) -> torch.Tensor:
            return self._dyn_step(tokens_BN, actions_B, mask_BN, self.dyn_cache, commit=False)

        tokens_BN = self._sample(logits_fn, self.num_worlds, self.generators)
        self._dyn_commit(tokens_BN, actions_B, self.dyn_cache)
        return self._dec_step(tokens_BN, self.dec_cache, commit=True)

    def _step_full(self, actions_B: torch.Tensor) -> torch.Tensor:
        """Recompute each world's whole window; worlds with equal history lengths share one batched call."""
        S = self.model.image_size
        frames_BHWC = torch.empty(self.num_worlds, S, S, 3, device=self.device)
        new_tokens_BN = torch.empty(self.num_worlds, self.tokens_per_frame, dtype=torch.long, device=self.device)
        for L in torch.unique(self.hist_len_B).tolist():
            g = torch.nonzero(self.hist_len_B == L)[:, 0]
            hist_gLN = self.hist_tokens_BWN[g, :L]
            # actions_gL[:, t] leads frame t to t+1 within the window; the window's first frame gets "no action".
            actions_gL = torch.cat([self.hist_actions_BW[g, 1:L], actions_B[g, None]], dim=1)

            def logits_fn(tokens_BN: torch.Tensor, mask_BN: torch.Tensor, hist_gLN=hist_gLN,
                          actions_gL=actions_gL) -> torch.Tensor:
                tokens_BTN = torch.cat([hist_gLN, tokens_BN[:, None]], dim=1)
                mask_BTN = torch.zeros_like(tokens_BTN, dtype=torch.bool)
                mask_BTN[:, -1] = mask_BN
                return self.model.dynamics(tokens_BTN, actions_gL, mask_BTN)[:, -1]

            tokens_gN = self._sample(logits_fn, len(g), [self.generators[i] for i in g.tolist()])
            window_gLN = torch.cat([hist_gLN, tokens_gN[:, None]], dim=1)
            frames_BHWC[g] = self.model.tokenizer.decode(window_gLN)[:, -1]
            new_tokens_BN[g] = tokens_gN
        # Append the new frame, dropping the oldest once W-1 past frames are held.
        full_B = self.hist_len_B == self.hist_tokens_BWN.shape[1]
        if full_B.any():
            self.hist_tokens_BWN[full_B] = torch.roll(self.hist_tokens_BWN[full_B], -1, dims=1)
            self.hist_actions_BW[full_B] = torch.roll(self.hist_actions_BW[full_B], -1, dims=1)
            self.hist_len_B[full_B] -= 1
        ar = torch.arange(self.num_worlds, device=self.device)
        self.hist_tokens_BWN[ar, self.hist_len_B] = new_tokens_BN
        self.hist_actions_BW[ar, self.hist_len_B] = actions_B
        self.hist_len_B += 1
        return frames_BHWC
