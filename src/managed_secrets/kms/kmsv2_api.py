"""The Kubernetes KMS v2 gRPC API (``k8s.io/kms/apis/v2``), described in code: messages and method paths.

The API is three unary calls on the service ``v2.KeyManagementService`` (Status, Encrypt, Decrypt). Instead
of generated ``_pb2`` modules (and a protoc step in the build) the messages are declared here as a protobuf
file descriptor, field for field as the published API defines them, and turned into message classes by the
protobuf runtime. The wire format is therefore exactly what kube-apiserver and every KMS v2 plugin speak.

Used by the operator's client (``kms.kmsv2``) and by the PKCS#11-backed plugin (``kms.plugin``).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = [
    "API_VERSION",
    "SERVICE",
    "DecryptRequest",
    "DecryptResponse",
    "EncryptRequest",
    "EncryptResponse",
    "StatusRequest",
    "StatusResponse",
    "method",
]

API_VERSION = "v2"
SERVICE = "v2.KeyManagementService"

_F = descriptor_pb2.FieldDescriptorProto
_STRING, _BYTES, _MESSAGE = _F.TYPE_STRING, _F.TYPE_BYTES, _F.TYPE_MESSAGE
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED

# (message, [(field, number, type, map?)]): proto3, every field singular unless it is a map<string, bytes>.
_MESSAGES: list[tuple[str, list[tuple[str, int, int, bool]]]] = [
    ("StatusRequest", []),
    (
        "StatusResponse",
        [("version", 1, _STRING, False), ("healthz", 2, _STRING, False), ("key_id", 3, _STRING, False)],
    ),
    (
        "DecryptRequest",
        [
            ("ciphertext", 1, _BYTES, False),
            ("uid", 2, _STRING, False),
            ("key_id", 3, _STRING, False),
            ("annotations", 4, _MESSAGE, True),
        ],
    ),
    ("DecryptResponse", [("plaintext", 1, _BYTES, False)]),
    ("EncryptRequest", [("plaintext", 1, _BYTES, False), ("uid", 2, _STRING, False)]),
    (
        "EncryptResponse",
        [("ciphertext", 1, _BYTES, False), ("key_id", 2, _STRING, False), ("annotations", 3, _MESSAGE, True)],
    ),
]


def _file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(
        name="managed_secrets/kms/v2/api.proto", package="v2", syntax="proto3"
    )
    for name, fields in _MESSAGES:
        message = proto.message_type.add(name=name)
        for field, number, kind, is_map in fields:
            if is_map:
                entry = message.nested_type.add(name="AnnotationsEntry")
                entry.options.map_entry = True
                entry.field.add(name="key", number=1, type=_STRING, label=_OPTIONAL, json_name="key")
                entry.field.add(name="value", number=2, type=_BYTES, label=_OPTIONAL, json_name="value")
                message.field.add(
                    name=field,
                    number=number,
                    type=_MESSAGE,
                    label=_REPEATED,
                    type_name=f".v2.{name}.AnnotationsEntry",
                    json_name=field,
                )
            else:
                message.field.add(name=field, number=number, type=kind, label=_OPTIONAL, json_name=field)
    service = proto.service.add(name="KeyManagementService")
    for rpc in ("Status", "Decrypt", "Encrypt"):
        service.method.add(name=rpc, input_type=f".v2.{rpc}Request", output_type=f".v2.{rpc}Response")
    return proto


# A pool of our own: nothing else registered in the process (another copy of the API) can clash with it.
_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file())


def _message(name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"v2.{name}"))


StatusRequest: Any = _message("StatusRequest")
StatusResponse: Any = _message("StatusResponse")
DecryptRequest: Any = _message("DecryptRequest")
DecryptResponse: Any = _message("DecryptResponse")
EncryptRequest: Any = _message("EncryptRequest")
EncryptResponse: Any = _message("EncryptResponse")


def method(name: str) -> str:
    """The gRPC method path of one call, e.g. ``/v2.KeyManagementService/Status``."""
    return f"/{SERVICE}/{name}"
