"""Fixtures for both test folders: the real data set, and skipping GPU tests with a reason."""
import os
from pathlib import Path

# torch and JAX share one GPU in the parity tests: stop JAX from taking 75% of its memory up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import pytest  # noqa: E402

from tests.helpers import real_data_dir  # noqa: E402


def _cuda_reason() -> str | None:
    try:
        import torch  # noqa: PLC0415 -- absent torch: GPU tests skip, saying so
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "CUDA is not available on this machine (torch.cuda.is_available() is False)"
    import jax  # noqa: PLC0415 -- only when GPU tests were collected and torch sees CUDA

    try:
        jax.devices("gpu")
    except RuntimeError:
        return "JAX sees no GPU (install jax[cuda12]/jax[cuda13])"
    return None


# `make test-fast` (`pytest -m fast`): the edit-run loop, a few minutes where the whole suite takes many. A file
# maps to None (every test in it) or to the test functions it lends the loop, or to "-name"s it keeps out (the
# others join). Chosen for seconds each and so that every package runs (tests/test_fast_loop.py holds both).
# Tests marked slow, distributed or gpu never join.
FAST: dict[str, tuple[str, ...] | None] = {
    "tests/test_mirror.py": None,
    "tests/test_import_rules.py": None,
    "tests/test_docs_links.py": None,
    "tests/test_fast_loop.py": None,
    "tests/test_bench_agree.py": None,
    "tests/test_pairs.py": None,
    "tests/test_benchmarks.py": ("-test_quick_run_writes_json_and_charts", "-test_cuda_absent_is_one_line_exit_2"),
    "tests/test_data.py": ("-test_cli_missing_data_exit_2", "-test_cli_corrupt_file_exit_2",
                           "-test_data_step_cli_from_a_debian_folder"),
    "tests/test_reference_torch.py": ("test_state_dict_is_the_tutorials", "test_hidden_sets_widths_and_depth",
                                      "test_checkpoint_round_trip_identical_logits",
                                      "test_checkpoint_from_other_widths_is_named", "test_checkpoint_garbage_and_missing"),
    "tests/test_jax_impl.py": ("test_shapes_and_count", "test_init_matches_torch_distribution",
                               "test_scan_epoch_equals_python_loop_including_partial_batch",
                               "test_partial_batch_is_trained_on", "test_evaluate_is_mean_of_batch_means",
                               "test_checkpoint_round_trip_bit_exact", "test_checkpoint_mismatch_names_first_parameter",
                               "test_launch_turns_a_failed_or_late_process_into_one_error"),
    "parity/test_weights.py": None,
    "parity/test_names.py": None,
    "parity/test_checker_trust.py": ("test_correct_dropout_port_passes", "test_eval_dropout_does_not_widen_its_tolerance",
                                     "test_bad_steps_refused", "test_unknown_causes_are_not_misdiagnosed"),
    "parity/test_optimizers.py": None,
    "parity/test_compare.py": None,
    "parity/test_verdict.py": None,
    "parity/test_tolerances.py": ("-test_calibration_reproduces_on_a_small_slice",),
    "parity/test_side_by_side.py": ("-test_one_epoch_report_and_plot", "-test_disagreement_exits_1",
                                    "-test_derived_run_trains_every_pair_with_the_mlps_report_shape"),
    "parity/test_harness.py": ("test_tutorial_mode_switches",),
    "quickstart_parity_guide/test_study.py": ("test_guide_covers_every_chapter",),
    "quickstart_parity_guide/test_chapters.py": ("test_every_public_name_exists_on_both_sides",
                                                 "test_both_sides_have_the_same_chapter_modules", "test_prng_properties",
                                                 "test_pytrees_order_and_norms"),
}
_NEVER_FAST = ("slow", "distributed", "gpu")


def is_fast(rel: str, name: str, markers) -> bool:
    """Whether the test function ``name`` of the file ``rel`` (relative to the root) is in ``FAST``."""
    if rel not in FAST or any(m in markers for m in _NEVER_FAST):
        return False
    names = FAST[rel]
    if names is None:
        return True
    if all(n.startswith("-") for n in names):
        return f"-{name}" not in names
    return name in names


def pytest_collection_modifyitems(config, items):
    root = Path(str(config.rootpath))
    for item in items:
        rel = Path(str(item.path)).relative_to(root).as_posix() if Path(str(item.path)).is_relative_to(root) else ""
        if is_fast(rel, getattr(item, "originalname", item.name), {m.name for m in item.iter_markers()}):
            item.add_marker(pytest.mark.fast)
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    reason = _cuda_reason()
    if reason:
        for item in gpu_items:
            item.add_marker(pytest.mark.skip(reason=f"gpu test: {reason}"))


@pytest.fixture(scope="session")
def data_dir() -> str:
    """The real FashionMNIST (CI installs Debian's copy); skipped with a reason where it is absent."""
    path = real_data_dir()
    if path is None:
        pytest.skip("real FashionMNIST not found: run 'make data' or 'apt-get install dataset-fashion-mnist'")
    return path
