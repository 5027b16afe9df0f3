"""Cinder's test base class, runnable under pytest."""

from cinder.tests.unit import test


class PytestCompat:
    """Cinder's TestCase clears every public attribute at cleanup, among them the test method
    pytest sets on the instance and deletes afterwards; keep that one."""

    def _common_cleanup(self):
        name = getattr(self, "_testMethodName", None)
        saved = self.__dict__.get(name)
        super()._common_cleanup()
        if saved is not None:
            self.__dict__[name] = saved


class TestCase(PytestCompat, test.TestCase):
    """Cinder's ``cinder.tests.unit.test.TestCase``: an in-memory sqlite database with
    Cinder's schema, a lock path, its policy file and fake messaging."""
