"""OpenStack Cinder volume driver for Alcubierre block storage."""
