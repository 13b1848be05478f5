"""The model-family record: one place that the FLOPs counter, the pruner layout and the run checks read."""
import dataclasses

import pytest

from evaluate.analysis.flops import model_dims
from vla_pruner.families import family_names, model_family, register_family


def test_built_in_families_carry_their_sequence_shape():
    openvla, oft = model_family("openvla"), model_family("openvla_oft")
    assert (openvla.num_images, openvla.cost.decode_steps, openvla.cost.extra_tokens) == (1, 6, 0)
    assert (oft.num_images, oft.cost.decode_steps, oft.cost.extra_tokens) == (2, 0, 58)  # proprio + 8x7 slots + </s>
    assert oft.cost.unnorm_key(None, "libero_10") == "libero_10_no_noops" and oft.cost.unnorm_key("x", "libero_10") == "x"
    with pytest.raises(ValueError, match="unknown model family 'pi9'; known: openvla, openvla_oft, pi0"):
        model_family("pi9")


def test_a_family_defined_in_a_test_module_is_counted_without_editing_the_project():
    """A three-camera variant of OpenVLA: registering its record is all the FLOPs counter and layout need."""
    three = register_family(dataclasses.replace(model_family("openvla"), name="three_cameras", num_images=3))
    try:
        assert "three_cameras" in family_names()
        dims = model_dims({"name": "three_cam_tiny", "family": "three_cameras", "build_seed": 0})
        assert dims.family is three and dims.sequence_length(35) == 35 + 3 * 256
        assert three.layout(dims.num_layers).image_tokens == (256, 256, 256)
        with pytest.raises(ValueError, match="registered twice"):
            register_family(three)
    finally:
        from vla_pruner import families

        families._REGISTERED.pop("three_cameras", None)
