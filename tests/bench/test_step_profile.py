"""The step profiler keeps working: its --tiny CPU run times every variant and sorts kernels by class."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "bench"))


def test_tiny_run_times_each_variant_and_fused_variants_give_the_same_output() -> None:
    proc = subprocess.run([sys.executable, "bench/step_profile.py", "--tiny", "--variants",
                           "eager:sdpa,compiled:sdpa+qkv,compiled:sdpa+gelu"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    rows = {r["variant"]: r for r in result["variants"]}
    assert list(rows) == ["eager:sdpa", "compiled:sdpa+qkv", "compiled:sdpa+gelu"]
    for r in rows.values():
        assert "error" not in r and r["s_per_step"] > 0 and set(r["profile"]["class_s"]) == {
            "attention", "matmul", "triton", "other"}
    # fusing q/k/v and the GELU epilogue (CPU: diffusers' own path) change no number
    assert rows["compiled:sdpa+qkv"]["rel_err_vs_first"] < 1e-5
    assert rows["compiled:sdpa+gelu"]["rel_err_vs_first"] < 1e-5


def test_kernels_are_sorted_into_classes_by_name() -> None:
    from step_profile import kernel_class

    assert kernel_class("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7") == "attention"
    assert kernel_class("nvjet_sm90_tst_192x208_64x4_2x1_v_bz_coopB_bias_TNT") == "matmul"
    assert kernel_class("triton_red_fused__fused_rms_norm__scaled_dot_product_cudnn_attention_permute") == "triton"
    assert kernel_class("Memcpy DtoH (Device -> Pageable)") == "other"
