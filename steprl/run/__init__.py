"""Run-level machinery: kernel pinning (portable exactness) and the machine fingerprint."""
