"""Forward-pass throughput against the measured roofline, for every model and for the default.

Roofline fraction = FLOPs per image (``benchmarks/models.py``: convolutions and matrix
products, multiply-add = 2) x images/s / fp32 matmul FLOP/s measured on this machine at
the same torch thread count in the same run (``benchmarks/peak.py``).

Every registered model is timed in interleaved rounds (model 1, 2, ..., 1, 2, ...): the
first round is cold and reported apart, the rest give the median images/s with its
spread.

For the default model (``lensnet.load_model("default")``) a sequence of variants is
tried, each timed interleaved with the current best (A B A B ...: one cold round, then
the warm ones), and kept only where the median over warm rounds of its per-round speed
ratio to the stage's baseline (t_baseline_i / t_variant_i) exceeds 1 + ``KEEP_MARGIN``:

1. grad mode: plain call, ``torch.no_grad``, ``torch.inference_mode`` (the pipeline's);
2. memory format and batch-norm folding: NCHW, channels_last, folded BN
   (``benchmarks/fold.py``), both;
3. batch size 8..512;
4. ``torch.compile`` (inductor, with ``freezing`` so that weights are constants and
   conv+BN are folded at compile time) of the best eager variant at its batch size;
5. torch threads 1 vs 2 for the best variant (each against the matmul peak at its own
   thread count).
"""

from __future__ import annotations

import copy
import time
from typing import Any, Callable

import torch
from torch import nn

from benchmarks.common import TIMING_KEYS, interleaved, log, paired_ratios, per_second, scale_spread, spread
from benchmarks.fold import fold_batchnorm
from benchmarks.models import flops_per_image, make_inputs
from lensnet.models import create_model, list_models, model_spec

#: A variant replaces the current best only if it is this much faster (median per-round ratio).
KEEP_MARGIN = 0.10
#: The pipeline's current settings (pipeline/inference.py, pipeline/config.py).
PIPELINE_BATCH = 256
BATCHES = (8, 16, 32, 64, 128, 256, 512)
BATCHES_QUICK = (16, 128)
#: Warm rounds per comparison (after one cold round): run_all.py's full run and --quick.
WARM_ROUNDS = 5
WARM_ROUNDS_QUICK = 2


def all_models(bands: int, batch: int, repeats: int, peak_flops: float, device: str = "cpu") -> list[dict]:
    """Parameters, FLOPs/image, median images/s and roofline fraction of every registered model.

    The models are timed in interleaved rounds (one batch each per round): one cold round,
    then ``repeats`` warm ones, so that a burst of other work hits all models alike.
    """
    models, rows, functions = {}, {}, {}
    for name in list_models():
        torch.manual_seed(0)
        model = create_model(name, bands=bands).eval().to(device)
        inputs = make_inputs(model, name, bands, batch)
        inputs = tuple(t.to(device) for t in inputs) if isinstance(inputs, tuple) else inputs.to(device)
        models[name] = model
        rows[name] = {
            "name": name,
            "input_size_px": list(model_spec(name).input_size_px),
            "bands": bands,
            "batch": batch,
            "parameters": sum(p.numel() for p in model.parameters()),
            "flops_per_image": flops_per_image(model, inputs),
        }

        def one_batch(model=model, inputs=inputs) -> None:
            with torch.inference_mode():
                model(inputs)
        functions[name] = one_batch
    sync = torch.cuda.synchronize if device == "cuda" else None  # untested on the CPU machine
    timings = interleaved(functions, repeats, cold_rounds=1, synchronize=sync)
    for name, row in rows.items():
        timing = timings[name]
        rate = spread(per_second(batch, timing["warm_s"]))
        row.update({
            "images_per_s": rate["median"],
            "images_per_s_spread": rate,
            "images_per_s_cold": batch / timing["cold_s"],
            "achieved_flops_per_s": row["flops_per_image"] * rate["median"],
            "roofline_fraction": row["flops_per_image"] * rate["median"] / peak_flops,
            **timing,
        })
        log(f"  {name:28s} {row['flops_per_image'] / 1e9:7.3f} GFLOP/img {rate['median']:9.1f} img/s "
            f"[{rate['min']:.1f}-{rate['max']:.1f}] {100 * row['roofline_fraction']:5.1f}% of matmul peak")
    return list(rows.values())


def _pass(model: Callable, inputs: torch.Tensor, batch: int, context, threads: int) -> Callable[[], None]:
    """One timed unit: every image of ``inputs`` through ``model`` in batches of ``batch``."""
    def run() -> None:
        torch.set_num_threads(threads)
        with context():
            for start in range(0, len(inputs), batch):
                model(inputs[start:start + batch])
    return run


def _max_difference(model: Callable, reference: nn.Module, inputs: torch.Tensor) -> float:
    with torch.inference_mode():
        return float((model(inputs) - reference(inputs)).abs().max())


class VariantSearch:
    """Keeps the current best variant of the default model and the record of every trial."""

    def __init__(self, module: nn.Module, images: int, rounds: int, threads: int, peak: dict[int, float],
                 flops: int, inputs: torch.Tensor | None = None):
        self.reference = module
        self.images = images
        self.rounds = rounds
        self.threads = threads
        self.peak = peak
        self.flops = flops
        if inputs is not None and len(inputs) >= images:
            self.inputs = inputs[:images].contiguous()
            self.input_kind = "normalised mock-survey stamps"
        else:
            self.inputs = torch.randn(images, 3, 64, 64, generator=torch.Generator().manual_seed(1))
            self.input_kind = "random N(0, 1)"
        self.check = self.inputs[:PIPELINE_BATCH].clone()  # at most `images` rows
        self.trials: list[dict] = []
        self.best = {"name": "pipeline (inference_mode, NCHW, batch 256)", "model": module,
                     "channels_last": False, "batch": PIPELINE_BATCH, "context": torch.inference_mode,
                     "images_per_s": None}

    def inputs_for(self, channels_last: bool) -> torch.Tensor:
        return self.inputs.contiguous(memory_format=torch.channels_last) if channels_last else self.inputs

    def compare(self, stage: str, variants: dict[str, dict]) -> dict[str, dict]:
        """Time ``variants`` (dicts like ``self.best``, optionally with ``threads``) interleaved."""
        functions = {name: _pass(v["model"], self.inputs_for(v["channels_last"]), v["batch"], v["context"],
                                 v.get("threads", self.threads))
                     for name, v in variants.items()}
        timings = interleaved(functions, self.rounds, cold_rounds=1)
        torch.set_num_threads(self.threads)
        results = {}
        for name, variant in variants.items():
            threads = variant.get("threads", self.threads)
            rates = spread(per_second(self.images, timings[name]["warm_s"]))
            rate = rates["median"]
            variant["images_per_s"] = rate
            results[name] = {
                "stage": stage, "variant": name, "threads": threads, "batch": variant["batch"],
                "channels_last": variant["channels_last"], "images_per_s": rate, "images_per_s_spread": rates,
                "images_per_s_cold": self.images / timings[name]["cold_s"],
                "roofline_fraction": self.flops * rate / self.peak[threads],
                "roofline_fraction_spread": scale_spread(rates, self.flops / self.peak[threads]),
                "max_abs_logit_difference": _max_difference(
                    variant["model"], self.reference, self.check[:variant["batch"]].contiguous(
                        memory_format=torch.channels_last if variant["channels_last"] else torch.contiguous_format)),
                **{key: timings[name][key] for key in TIMING_KEYS if key in timings[name]},
            }
            log(f"  [{stage}] {name:44s} {rate:8.1f} img/s [{rates['min']:.1f}-{rates['max']:.1f}] "
                f"{100 * results[name]['roofline_fraction']:5.1f}% roofline")
        self.trials.extend(results.values())
        return results

    def keep_if_faster(self, stage: str, candidates: dict[str, dict], results: dict[str, dict],
                       baseline_name: str, prefer_simplest: bool = False) -> str:
        """Make the fastest candidate the best if it beats ``baseline_name`` by KEEP_MARGIN.

        Speed is compared per round: ``t_baseline_i / t_candidate_i`` for each warm round
        i, and the median of these ratios is the candidate's gain (a single lucky round
        cannot make a variant win). With ``prefer_simplest``, the first candidate (in the
        order given, simplest first) whose median ratio is within KEEP_MARGIN of the
        fastest's is kept instead: a gain smaller than the noise does not justify the
        extra machinery.
        """
        baseline_s = results[baseline_name]["warm_s"]
        for name in candidates:
            ratio = paired_ratios(baseline_s, results[name]["warm_s"])
            results[name]["ratio_vs_stage_baseline"] = ratio
            results[name]["gain_vs_stage_baseline"] = ratio["median"] - 1
        ratio = {name: results[name]["ratio_vs_stage_baseline"]["median"] for name in candidates}
        fastest = max(candidates, key=ratio.get)
        gain = ratio[fastest] - 1
        kept = baseline_name
        if gain > KEEP_MARGIN:
            kept = fastest
            if prefer_simplest:
                kept = next(name for name in candidates
                            if ratio[name] >= ratio[fastest] / (1 + KEEP_MARGIN) and ratio[name] > 1 + KEEP_MARGIN)
        for name in candidates:
            results[name]["kept"] = name == kept
        self.best = {**candidates[kept], "name": kept}
        low, high = (results[fastest]["ratio_vs_stage_baseline"][key] - 1 for key in ("min", "max"))
        log(f"  [{stage}] kept: {kept} ({100 * gain:+.1f}% median per-round gain for the fastest, {fastest} "
            f"[{100 * low:+.1f}% to {100 * high:+.1f}%], vs {baseline_name})")
        return kept


def default_model_variants(threads: int, peak: dict[int, float], quick: bool, compile_model: bool,
                           inputs=None, warm_rounds: int | None = None) -> dict[str, Any]:
    """The variant search described in the module docstring; returns every trial and the choices.

    ``inputs``: normalised stamps (n, 3, 64, 64) to time on (random normal ones if None);
    ``warm_rounds``: per comparison, after the cold one (default ``WARM_ROUNDS``, or
    ``WARM_ROUNDS_QUICK`` with ``quick``).
    """
    import lensnet

    torch.set_num_threads(threads)
    loaded = lensnet.load_model("default")
    module = loaded.module
    flops = flops_per_image(module, torch.randn(1, 3, 64, 64))
    search = VariantSearch(module, images=128 if quick else 512,
                           rounds=warm_rounds or (WARM_ROUNDS_QUICK if quick else WARM_ROUNDS), threads=threads,
                           peak=peak, flops=flops,
                           inputs=None if inputs is None else torch.as_tensor(inputs, dtype=torch.float32))
    base = dict(search.best)
    choices: dict[str, Any] = {"flops_per_image": flops, "threads": threads, "inputs": search.input_kind}

    # 1. grad mode
    stage = {"torch.inference_mode (pipeline)": {**base},
             "torch.no_grad": {**base, "context": torch.no_grad},
             "plain call (autograd on)": {**base, "context": torch.enable_grad}}
    results = search.compare("grad mode", stage)
    choices["grad_mode"] = search.keep_if_faster("grad mode", stage, results, "torch.inference_mode (pipeline)",
                                                 prefer_simplest=True)

    # 2. memory format and BN folding
    folded, fold_report = fold_batchnorm(module)
    choices["batchnorm_folding"] = fold_report
    current = dict(search.best)
    stage = {"NCHW (current)": current,
             "channels_last": {**current, "model": copy.deepcopy(module).to(memory_format=torch.channels_last),
                               "channels_last": True},
             "BN folded": {**current, "model": folded},
             "BN folded + channels_last": {**current, "model": copy.deepcopy(folded).to(
                 memory_format=torch.channels_last), "channels_last": True}}
    results = search.compare("layout/BN", stage)
    choices["layout_bn"] = search.keep_if_faster("layout/BN", stage, results, "NCHW (current)",
                                                 prefer_simplest=True)

    # 3. batch size (eager)
    current = dict(search.best)
    batches = BATCHES_QUICK if quick else BATCHES
    stage = {f"batch {b}": {**current, "batch": b} for b in sorted(set(batches) | {current["batch"]})}
    results = search.compare("batch", stage)
    choices["batch"] = search.keep_if_faster("batch", stage, results, f"batch {current['batch']}")

    # 4. torch.compile of the best eager variant, at its batch size (one compile, no dynamic shapes)
    best_eager = dict(search.best)
    if compile_model:
        compiled = _compile(best_eager, search.inputs_for(best_eager["channels_last"])[:best_eager["batch"]])
        choices["compile"] = {key: value for key, value in compiled.items() if key != "variant"}
        if compiled.get("variant") is not None:
            stage = {"best eager": best_eager, "torch.compile (inductor, freezing)": compiled["variant"]}
            results = search.compare("compile", stage)
            choices["compile"]["kept"] = search.keep_if_faster("compile", stage, results, "best eager")
            choices["compile"]["gain"] = results["torch.compile (inductor, freezing)"]["gain_vs_stage_baseline"]
    else:
        choices["compile"] = {"skipped": "--quick or --no-compile"}

    # 5. threads (each against its own peak)
    best = dict(search.best)
    if threads > 1:
        stage = {"1 thread": {**best, "threads": 1}, f"{threads} threads": {**best, "threads": threads}}
        results = search.compare("threads", stage)
        one, many = results["1 thread"], results[f"{threads} threads"]
        for name in stage:  # per-round speed-up over 1 thread
            results[name]["ratio_vs_stage_baseline"] = paired_ratios(one["warm_s"], results[name]["warm_s"])
        speed_up = many["ratio_vs_stage_baseline"]
        choices["threads_compare"] = {
            "1": one["images_per_s"], str(threads): many["images_per_s"],
            "speed_up": speed_up["median"], "speed_up_spread": speed_up,
            "roofline_fraction_1": one["roofline_fraction"], f"roofline_fraction_{threads}": many["roofline_fraction"]}
    choices["best"] = {"name": search.best["name"], "batch": search.best["batch"],
                       "channels_last": search.best["channels_last"]}
    return {"trials": search.trials, "choices": choices, "profile": _profile(module, threads, search.inputs)}


def _compile(variant: dict, example: torch.Tensor, timeout_s: float = 300) -> dict:
    """``torch.compile`` the variant's model; returns the compiled variant and the compile time."""
    try:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # weights as constants: conv+BN folding, weight prepacking
        inductor_config.force_disable_caches = True  # time a cold compile, as a fresh worker would see it
        model = torch.compile(copy.deepcopy(variant["model"]), dynamic=False)
        started = time.perf_counter()
        with torch.inference_mode():
            model(example)
        seconds = time.perf_counter() - started
    except Exception as error:  # no compiler, unsupported op, ...: report and move on
        return {"error": f"{type(error).__name__}: {error}"[:500], "variant": None}
    log(f"  torch.compile: first call (compile) {seconds:.1f} s")
    if seconds > timeout_s:
        return {"compile_s": seconds, "error": f"compile took longer than {timeout_s} s", "variant": None}
    return {"compile_s": seconds, "variant": {**variant, "model": model}}


def _profile(module: nn.Module, threads: int, inputs: torch.Tensor, batch: int = 256) -> dict[str, float]:
    """Share of eager CPU time per aten op (NCHW and channels_last), from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(threads)
    shares = {}
    for name, model, channels_last in (("NCHW", module, False),
                                       ("channels_last", copy.deepcopy(module).to(memory_format=torch.channels_last),
                                        True)):
        x = inputs[:batch]
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            model(x)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                model(x)
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:5]
        shares[name] = {e.key: round(e.self_cpu_time_total / total, 3) for e in top}
    return shares


def cuda_forward(batch_sizes=(256, 1024, 4096), images: int = 8192) -> dict:
    """GPU forward throughput of the default model, fp32 and bf16 autocast (untested here)."""
    import lensnet
    from benchmarks.common import repeated_time

    loaded = lensnet.load_model("default", device="cuda")
    x = torch.randn(images, 3, 64, 64, device="cuda")
    out = {}
    for precision in ("fp32", "bf16"):
        for batch in batch_sizes:
            def run(batch=batch, precision=precision):
                with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=precision == "bf16"):
                    for start in range(0, images, batch):
                        loaded.module(x[start:start + batch])
            timing = repeated_time(run, 5, cold=2, synchronize=torch.cuda.synchronize)
            rates = spread(per_second(images, timing["warm_s"]))
            out[f"{precision}_batch{batch}"] = {"images_per_s": rates["median"], "images_per_s_spread": rates,
                                                **timing}
    return out
