# Cinder's test package first: it selects how oslo.service runs (threads or eventlet) and
# registers Cinder's versioned objects before anything imports a driver.
import cinder.tests.unit  # noqa: F401
