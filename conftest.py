"""Collection settings shared by the test suite and the docstring examples.

``python -m pytest --doctest-modules src/moelearn`` imports every module of the
package; the torch layer needs the optional ``torch`` extra.
"""

from importlib.util import find_spec

collect_ignore = [] if find_spec("torch") else ["src/moelearn/torch.py"]
