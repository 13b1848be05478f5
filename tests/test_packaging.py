"""pyproject.toml as setuptools reads it: `bash scripts/setup.sh` printed setuptools' deprecation warning for
`project.license` as a table four times (34 lines of `!!`, issue 38); the SPDX string form builds without one."""
import warnings

from setuptools.config.pyprojecttoml import apply_configuration
from setuptools.dist import Distribution

from tests.conftest import REPO


def test_the_package_metadata_applies_without_a_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), REPO / "pyproject.toml")
    assert [str(w.message).splitlines()[0] for w in caught] == []
    assert dist.metadata.license_expression == "MIT"
