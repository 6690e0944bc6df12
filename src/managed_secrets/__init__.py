"""managed-secrets-operator: a versioned, envelope-encrypted secrets manager inside Kubernetes."""

__version__ = "0.1.0"
