"""Render the native Secret a ManagedSecret projects: pure, no Kubernetes calls.

Keys are copied from the ACSCurrent value; ``target.template.data`` adds keys (or, with ``mergePolicy:
Replace``, replaces them all) rendered with Jinja2's sandbox, which refuses attribute tricks that reach
Python internals. Template errors are reported by key name and error kind only: the message of an arbitrary
exception could quote a value.

Variables are ``{{ name }}`` unless ``target.template.delimiters`` names another pair (``[[ name ]]`` for a
ManagedSecret shipped in a Helm chart, whose own templates read ``{{ }}``); blocks keep ``{% %}`` and comments
``{# #}``, which Helm leaves alone. Every pair gets its own sandbox with the same bounds.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
import jinja2.nodes
from jinja2 import meta
from jinja2.compiler import CodeGenerator, CompilerExit, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from managed_secrets.crypto import fingerprint
from managed_secrets.domain import SecretValue
from managed_secrets.errors import ManagedSecretsError
from managed_secrets.names import (
    DATA_HASH_ANNOTATION,
    MANAGED_LABEL,
    OWNER_ANNOTATION,
    PREVIOUS_VERSION_ANNOTATION,
    VERSION_ANNOTATION,
)

__all__ = [
    "BINARY_VALUE_KEY",
    "DATA_HASH_ANNOTATION",
    "DEFAULT_DELIMITERS",
    "MANAGED_LABEL",
    "OWNER_ANNOTATION",
    "PREVIOUS_VERSION_ANNOTATION",
    "VERSION_ANNOTATION",
    "Delimiters",
    "DesiredSecret",
    "RenderError",
    "TargetSpec",
    "data_hash",
    "delimiters_problem",
    "render",
]

BINARY_VALUE_KEY = "value"

MAX_RENDERED_BYTES = 256 * 1024
"""The most one template may produce (a Secret holds at most 1 MiB in all)."""


MAX_RENDER_SECONDS = 1.0
"""The longest one template may render; a never-ending loop is stopped, not waited for."""
MAX_RENDER_STEPS = 1_000_000
"""The most blocks (loop iterations, branches, macro calls) one render may run."""


class _TickingCodeGenerator(CodeGenerator):
    """Starts every block of generated code (each loop iteration, branch and macro body) with a call to
    ``environment.render_tick()``, which is where a render is stopped when it has run too long."""

    def blockvisit(self, nodes: Iterable[jinja2.nodes.Node], frame: Frame) -> None:
        try:
            self.writeline("environment.render_tick()")
            for node in nodes:
                self.visit(node, frame)
        except CompilerExit:
            pass


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox, plus bounds on the operators that can make huge objects from a short template
    (``'x' * 10**9``, ``2 ** 10**9``) and on the time and steps of a render: a template can cost the operator
    neither its memory nor its CPU."""

    intercepted_binops = frozenset({"*", "**"})
    code_generator_class = _TickingCodeGenerator
    _budget = threading.local()

    @contextlib.contextmanager
    def bounded(self) -> Iterator[None]:
        self._budget.deadline = time.monotonic() + MAX_RENDER_SECONDS
        self._budget.steps = 0
        try:
            yield
        finally:
            self._budget.deadline = None

    def render_tick(self) -> None:
        budget = self._budget
        deadline = getattr(budget, "deadline", None)
        if deadline is None:
            return
        budget.steps += 1
        if budget.steps > MAX_RENDER_STEPS or (budget.steps % 1024 == 0 and time.monotonic() > deadline):
            raise SecurityError("render ran too long")

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, int) and abs(right) > 64:
                raise SecurityError("exponent too large")
        elif operator == "*":
            for seq, count in ((left, right), (right, left)):
                sized = isinstance(seq, (str, bytes, list, tuple)) and isinstance(count, int)
                if sized and len(seq) * count > MAX_RENDERED_BYTES:
                    raise SecurityError("repetition too large")
        return super().call_binop(context, operator, left, right)


@dataclass(frozen=True)
class Delimiters:
    """The strings that open and close a variable in a template (``spec.target.template.delimiters``)."""

    left: str = "{{"
    right: str = "}}"


DEFAULT_DELIMITERS = Delimiters()

DELIMITER_CHARACTERS = "!#$%&()*+,-./:;<=>?@[]^|~{}"
"""What a custom delimiter is made of: punctuation that is neither a quote, a backslash, a backtick nor ``_``
(so a delimiter never looks like a name or a string, nor breaks the YAML or Go template around it)."""
DELIMITER_LENGTH = (2, 8)
RESERVED_DELIMITERS = ("{%", "%}", "{#", "#}")
"""Jinja's block and comment delimiters, which stay as they are: a variable delimiter may not contain them."""


def delimiters_problem(left: object, right: object) -> tuple[str, str] | None:
    """``(field, reason)`` when ``left``/``right`` cannot delimit variables (the CRD's rules, then a probe of
    the lexer), ``None`` when they can; ``field`` is ``left`` or ``right``."""
    low, high = DELIMITER_LENGTH
    for name, text in (("left", left), ("right", right)):
        if not isinstance(text, str) or not low <= len(text) <= high:
            return name, f"must be a string of {low} to {high} characters"
        if any(c not in DELIMITER_CHARACTERS for c in text):
            return name, (
                f"{text!r} must be made of the punctuation characters {DELIMITER_CHARACTERS} only "
                "(no letters, digits, spaces, quotes, backslashes, backticks or '_')"
            )
        reserved = [r for r in RESERVED_DELIMITERS if r in text]
        if reserved:
            return name, f"{text!r} contains {reserved[0]!r}, which Jinja keeps for blocks and comments"
    assert isinstance(left, str) and isinstance(right, str)
    if left == right:
        return "right", f"must differ from left (both are {left!r})"
    if not _delimits_a_variable(Delimiters(left, right)):
        return "right", f"{left!r} and {right!r} do not delimit a variable ({left} name {right})"
    return None


@functools.lru_cache(maxsize=64)
def _delimits_a_variable(delimiters: Delimiters) -> bool:
    """Whether Jinja's lexer reads ``left x right`` as the variable ``x`` (every spec parse asks: cached)."""
    try:
        body = _environment(delimiters).parse(f"{delimiters.left} x {delimiters.right}").body
    except (jinja2.TemplateError, AssertionError):
        return False
    return (
        len(body) == 1
        and isinstance(body[0], jinja2.nodes.Output)
        and [type(n) for n in body[0].nodes] == [jinja2.nodes.Name]
    )


@functools.lru_cache(maxsize=64)
def _environment(delimiters: Delimiters) -> _BoundedSandbox:
    """One sandbox per delimiter pair (a spec names a pair, so there are few), each with the same bounds."""
    return _BoundedSandbox(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        variable_start_string=delimiters.left,
        variable_end_string=delimiters.right,
    )


@functools.lru_cache(maxsize=1024)
def _compile(source: str, delimiters: Delimiters = DEFAULT_DELIMITERS) -> jinja2.Template:
    """Templates come from specs and repeat on every reconcile: compile each text once."""
    return _environment(delimiters).from_string(source)


class RenderError(ManagedSecretsError):
    """The projected Secret cannot be rendered (a template fails, or a value is not text)."""


@dataclass(frozen=True)
class TargetSpec:
    """``spec.target`` of a ManagedSecret, with the CRD's defaults applied."""

    name: str
    type: str = "Opaque"
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    template: Mapping[str, str] = field(default_factory=dict)
    merge_policy: str = "Merge"
    delimiters: Delimiters = DEFAULT_DELIMITERS
    include_previous: bool = False
    previous_suffix: str = "_PREVIOUS"
    creation_policy: str = "Owner"
    adopt_existing: bool = False
    drift_policy: str = "Revert"

    @classmethod
    def from_spec(cls, spec: Mapping[str, object], default_name: str) -> TargetSpec:
        target = spec.get("target") or {}
        assert isinstance(target, Mapping)
        template = target.get("template") or {}
        assert isinstance(template, Mapping)
        delimiters = template.get("delimiters") or {}
        assert isinstance(delimiters, Mapping)
        return cls(
            name=str(target.get("name") or default_name),
            type=str(target.get("type") or "Opaque"),
            labels=dict(target.get("labels") or {}),
            annotations=dict(target.get("annotations") or {}),
            template=dict(template.get("data") or {}),
            merge_policy=str(template.get("mergePolicy") or "Merge"),
            delimiters=Delimiters(
                str(delimiters.get("left") or DEFAULT_DELIMITERS.left),
                str(delimiters.get("right") or DEFAULT_DELIMITERS.right),
            ),
            include_previous=bool(target.get("includePrevious", False)),
            previous_suffix=str(target.get("previousSuffix") or "_PREVIOUS"),
            creation_policy=str(target.get("creationPolicy") or "Owner"),
            adopt_existing=bool(target.get("adoptExisting", False)),
            drift_policy=str(target.get("driftPolicy") or "Revert"),
        )


@dataclass(frozen=True)
class DesiredSecret:
    """What the projected Secret must look like. ``repr`` shows key names, never data."""

    namespace: str
    name: str
    type: str
    data: Mapping[str, bytes]
    labels: Mapping[str, str]
    annotations: Mapping[str, str]

    @property
    def data_hash(self) -> str:
        return self.annotations[DATA_HASH_ANNOTATION]

    def __repr__(self) -> str:
        return (
            f"DesiredSecret({self.namespace}/{self.name}, type={self.type}, keys={sorted(self.data)}, "
            f"version={self.annotations.get(VERSION_ANNOTATION)})"
        )


def data_hash(data: Mapping[str, bytes], hash_key: bytes) -> str:
    """Keyed hash of a Secret's data: compares live and desired data without revealing either."""
    if not data:
        return fingerprint(b"{}", hash_key)
    return fingerprint(SecretValue.from_map(data).to_bytes(), hash_key)


def _plain(value: SecretValue) -> dict[str, bytes]:
    if value.keys():
        return value.as_dict()
    return {BINARY_VALUE_KEY: value.blob}


def _text_context(value: SecretValue) -> dict[str, str]:
    context: dict[str, str] = {}
    for key, raw in _plain(value).items():
        try:
            context[key] = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue  # binary entries cannot take part in templates; referencing one is an undefined name
    return context


def _undefined(source: str, context: Mapping[str, object], delimiters: Delimiters) -> str:
    try:
        names = sorted(meta.find_undeclared_variables(_environment(delimiters).parse(source)) - set(context))
    except jinja2.TemplateError:
        names = []
    if names:
        return f"refers to undefined names {names} (the value has the keys named in spec.generate/valueFrom)"
    return "looks up an attribute or item that does not exist"


def _render_template(
    key: str, source: str, context: Mapping[str, object], delimiters: Delimiters = DEFAULT_DELIMITERS
) -> bytes:
    try:
        with _environment(delimiters).bounded():
            rendered = _compile(source, delimiters).render(context).encode("utf-8")
        if len(rendered) > MAX_RENDERED_BYTES:
            raise RenderError(f"template for key {key!r} produced more than {MAX_RENDERED_BYTES} bytes")
        return rendered
    except jinja2.TemplateSyntaxError as e:
        raise RenderError(f"template for key {key!r} has a syntax error on line {e.lineno}: {e.message}") from None
    except jinja2.UndefinedError:
        # Jinja's own message quotes the object it looked into (a value): name only what is missing by name.
        raise RenderError(f"template for key {key!r} {_undefined(source, context, delimiters)}") from None
    except RenderError:
        raise
    except SecurityError as e:
        if str(e) == "render ran too long":
            raise RenderError(
                f"template for key {key!r} ran longer than {MAX_RENDER_SECONDS:g}s or {MAX_RENDER_STEPS} steps"
            ) from None
        raise RenderError(f"template for key {key!r} tried an operation the sandbox forbids") from None
    except Exception as e:
        raise RenderError(f"template for key {key!r} failed ({type(e).__name__})") from None


def render(
    *,
    owner_namespace: str,
    owner_name: str,
    target: TargetSpec,
    current: SecretValue,
    current_version: str,
    hash_key: bytes,
    previous: SecretValue | None = None,
    previous_version: str | None = None,
) -> DesiredSecret:
    """The Secret for ``current`` (and ``previous`` when ``target.include_previous``)."""
    data = _plain(current)
    context: dict[str, object] = dict(_text_context(current))
    context["version"] = current_version
    if target.include_previous and previous is not None:
        for key, raw in _plain(previous).items():
            data[key + target.previous_suffix] = raw
        context["previous"] = _text_context(previous)
    rendered = {
        key: _render_template(key, source, context, target.delimiters)
        for key, source in sorted(target.template.items())
    }
    if target.merge_policy == "Replace" and rendered:
        data = rendered
    else:
        data.update(rendered)

    annotations = dict(target.annotations)
    annotations[VERSION_ANNOTATION] = current_version
    if target.include_previous and previous_version:
        annotations[PREVIOUS_VERSION_ANNOTATION] = previous_version
    annotations[OWNER_ANNOTATION] = f"{owner_namespace}/{owner_name}"
    annotations[DATA_HASH_ANNOTATION] = data_hash(data, hash_key)
    labels = {**target.labels, MANAGED_LABEL: "true", "app.kubernetes.io/managed-by": "managed-secrets-operator"}
    return DesiredSecret(
        namespace=owner_namespace,
        name=target.name,
        type=target.type,
        data=data,
        labels=labels,
        annotations=annotations,
    )
