import cicada
import cicada._core


def test_version_is_a_string():
    assert isinstance(cicada.__version__, str)


def test_core_module_loads_with_state():
    assert cicada._core.__name__ == "cicada._core"
