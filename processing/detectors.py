"""The anomaly detectors of ``processing.anomaly`` run over many series at once, as the job runs them.

``run_series`` takes a batch of values already sorted into series (one slice per (device, metric),
in event-time order) and a state matrix with one row per series (``SeriesState.as_tuple`` order);
it updates the states in place and returns where detectors fired. Two implementations, chosen once:

- a numba-compiled loop (``numba`` in the ``processing`` extra): ~100x the per-value Python loop;
- a numpy fallback when numba cannot load (a platform without its wheels): every series steps
  forward together, one numpy operation per detector step over all series. Fast when a batch holds
  many short series, slower for a few long ones; always exact.

Both follow ``processing.anomaly.observe`` operation for operation (the reference, kept readable there),
so all three give the same detections and states to the last bit; ``tests/unit/processing/test_detectors.py``
holds them to it.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from processing.anomaly import DRIFT, EWMA, STUCK, DetectorConfig

log = logging.getLogger(__name__)

#: detector codes in the ``detector`` array ``run_series`` returns
CODES = (STUCK, EWMA, DRIFT)
N, MEAN, VAR, LAST, RUN, UPDATES, SLOW_VAR, REPEATS, DRIFT_UP, DRIFT_DOWN, REST = range(11)
STATE_WIDTH = 11


def new_states(count: int) -> np.ndarray:
    """State rows of series never seen (``SeriesState()``)."""
    states = np.zeros((count, STATE_WIDTH))
    states[:, LAST] = math.nan
    states[:, REST] = math.inf
    return states


def _params(cfg: DetectorConfig) -> np.ndarray:
    return np.array([cfg.alpha, cfg.z_threshold, float(cfg.warmup), float(cfg.stuck_run), cfg.var_alpha,
                     cfg.drift_threshold, cfg.drift_slack, cfg.stuck_chance])


def _loop(values, starts, states, params):  # type: ignore[no-untyped-def]  (numba compiles it as it is)
    """One series after another, one value after another: ``processing.anomaly.observe`` on arrays."""
    alpha, z_threshold, warmup, stuck_run, var_alpha, drift_threshold, drift_slack, stuck_chance = (
        params[0], params[1], params[2], params[3], params[4], params[5], params[6], params[7])
    cap = 3 * len(values)
    out_pos = np.empty(cap, np.int64)
    out_code = np.empty(cap, np.int64)
    out_score = np.empty(cap, np.float64)
    found = 0
    for s in range(len(starts) - 1):
        st = states[s]
        n, mean, var, last, run = st[0], st[1], st[2], st[3], st[4]
        updates, slow_var, repeats, drift_up, drift_down, rest = st[5], st[6], st[7], st[8], st[9], st[10]
        for i in range(starts[s], starts[s + 1]):
            value = values[i]
            n += 1.0
            repeat = value == last
            if not repeat:
                if run > 1.0:
                    rest = last
                run = 0.0
            run += 1.0
            last = value
            repeats += alpha * ((1.0 if repeat else 0.0) - repeats)
            if run == stuck_run and run >= stuck_run and updates >= stuck_run:
                frozen = True
                if last == rest:
                    before = max(0.0, 1.0 - (1.0 - repeats) / (1.0 - alpha) ** (run - 1.0))
                    frozen = before ** (stuck_run - 1.0) < stuck_chance
                if frozen:
                    out_pos[found], out_code[found], out_score[found] = i, 0, run
                    found += 1
            if updates == 0.0:
                updates, mean, var, slow_var = 1.0, value, 0.0, 0.0
                continue
            std = math.sqrt(max(min(var, slow_var), (1e-3 * max(abs(mean), 1.0)) ** 2))
            diff = value - mean
            z = diff / std
            warm = n > warmup
            if warm and abs(z) > z_threshold:
                out_pos[found], out_code[found], out_score[found] = i, 1, abs(z)
                found += 1
            if repeat:
                continue
            if warm:
                z = max(-z_threshold, min(z_threshold, z))
                diff = z * std
                if drift_threshold > 0:
                    drift_up = max(0.0, drift_up + z - drift_slack)
                    drift_down = max(0.0, drift_down - z - drift_slack)
                    if max(drift_up, drift_down) > drift_threshold:
                        out_pos[found], out_code[found], out_score[found] = i, 2, max(drift_up, drift_down)
                        found += 1
                        drift_up = drift_down = 0.0
            a = max(alpha, 1.0 / (updates + 1.0))
            slow = max(var_alpha, 1.0 / (updates + 1.0))
            mean += a * diff
            var = (1 - a) * (var + a * diff * diff)
            slow_var = (1 - slow) * (slow_var + slow * diff * diff)
            updates += 1.0
        st[0], st[1], st[2], st[3], st[4] = n, mean, var, last, run
        st[5], st[6], st[7], st[8], st[9], st[10] = updates, slow_var, repeats, drift_up, drift_down, rest
    return out_pos[:found], out_code[:found], out_score[:found]


def _lockstep(values, starts, states, params):  # type: ignore[no-untyped-def]
    """All series step forward together: step k feeds the k-th value of every series that has one."""
    alpha, z_threshold, warmup, stuck_run, var_alpha, drift_threshold, drift_slack, stuck_chance = params.tolist()
    lengths = np.diff(starts)
    hits: list[tuple[np.ndarray, int, np.ndarray]] = []
    order = np.argsort(-lengths, kind="stable")  # longest first: the active series are a prefix of it
    for k in range(int(lengths.max(initial=0))):
        rows = order[: int(np.count_nonzero(lengths > k))]
        pos = starts[rows] + k
        value = values[pos]
        st = states[rows]
        n, mean, var, last, run, updates, slow_var, repeats, drift_up, drift_down, rest = st.T.copy()
        n += 1.0
        repeat = value == last
        rest = np.where(~repeat & (run > 1.0), last, rest)
        run = np.where(repeat, run, 0.0) + 1.0
        last = value
        repeats += alpha * (repeat.astype(float) - repeats)
        stuck = (run == stuck_run) & (updates >= stuck_run)
        if stuck.any():
            with np.errstate(over="ignore"):
                before = np.maximum(0.0, 1.0 - (1.0 - repeats) / (1.0 - alpha) ** (run - 1.0))
            stuck &= (last != rest) | (before ** (stuck_run - 1.0) < stuck_chance)
            hits.append((pos[stuck], 0, run[stuck]))
        first = updates == 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            std = np.sqrt(np.maximum(np.minimum(var, slow_var), (1e-3 * np.maximum(np.abs(mean), 1.0)) ** 2))
            diff = value - mean
            z = diff / std
        warm = n > warmup
        ewma = ~first & warm & (np.abs(z) > z_threshold)
        hits.append((pos[ewma], 1, np.abs(z[ewma])))
        learn = ~first & ~repeat
        drifting = learn & warm
        z = np.where(drifting, np.clip(z, -z_threshold, z_threshold), z)
        diff = np.where(drifting, z * std, diff)
        if drift_threshold > 0:
            up = np.maximum(0.0, drift_up + z - drift_slack)
            down = np.maximum(0.0, drift_down - z - drift_slack)
            drift_up = np.where(drifting, up, drift_up)
            drift_down = np.where(drifting, down, drift_down)
            fired = drifting & (np.maximum(drift_up, drift_down) > drift_threshold)
            hits.append((pos[fired], 2, np.maximum(drift_up, drift_down)[fired]))
            drift_up = np.where(fired, 0.0, drift_up)
            drift_down = np.where(fired, 0.0, drift_down)
        a = np.maximum(alpha, 1.0 / (updates + 1.0))
        slow = np.maximum(var_alpha, 1.0 / (updates + 1.0))
        mean = np.where(first, value, np.where(learn, mean + a * diff, mean))
        var = np.where(first, 0.0, np.where(learn, (1 - a) * (var + a * diff * diff), var))
        slow_var = np.where(first, 0.0, np.where(learn, (1 - slow) * (slow_var + slow * diff * diff), slow_var))
        updates = np.where(first, 1.0, np.where(learn, updates + 1.0, updates))
        states[rows] = np.column_stack(
            (n, mean, var, last, run, updates, slow_var, repeats, drift_up, drift_down, rest))
    if not hits:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)
    pos = np.concatenate([h[0] for h in hits])
    code = np.concatenate([np.full(len(h[0]), h[1]) for h in hits])
    score = np.concatenate([h[2] for h in hits])
    return pos, code, score


def _compiled():  # type: ignore[no-untyped-def]
    try:
        import numba
    except ImportError:
        log.warning("numba is not installed: the anomaly detectors run on numpy (slower)")
        return None
    try:
        # cache=True keeps the machine code beside the module (or in NUMBA_CACHE_DIR), so a new Python
        # worker loads it instead of compiling again (seconds on a busy machine).
        return numba.njit(cache=True, nogil=True)(_loop)
    except RuntimeError:  # no writable cache directory (a read-only image): compile in each worker
        pass
    try:
        return numba.njit(nogil=True)(_loop)
    except Exception:  # a numba that cannot build for this platform: the numpy path is exact too
        log.exception("numba could not compile the anomaly detectors; they run on numpy")
        return None


_KERNEL = _compiled()


def run_series(values: np.ndarray, starts: np.ndarray, states: np.ndarray, cfg: DetectorConfig,
               *, use_numba: bool | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feeds ``values[starts[s]:starts[s + 1]]`` to series ``s`` (state row ``states[s]``, updated in place).

    Returns ``(positions, codes, scores)`` of the detections: index into ``values``, index into
    ``CODES``, score. ``use_numba`` forces one implementation (tests); by default numba when it loaded.
    """
    values = np.ascontiguousarray(values, dtype=np.float64)
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    kernel = _KERNEL if use_numba is not False else None
    if use_numba and kernel is None:
        raise RuntimeError("numba is not available")
    if kernel is None:
        return _lockstep(values, starts, states, _params(cfg))
    try:
        return kernel(values, starts, states, _params(cfg))  # type: ignore[no-any-return]
    except Exception:  # the first call compiles: an LLVM failure here must not stop the job
        log.exception("numba failed on the anomaly detectors; using numpy from now on")
        _disable()
        return _lockstep(values, starts, states, _params(cfg))


def _disable() -> None:
    global _KERNEL
    _KERNEL = None
