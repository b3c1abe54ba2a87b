"""What a client may ask for (`POST /v1/images`), the caps that bound it, and errors that name the field.

The JSON body is parsed by pydantic (types, unknown fields); the checks that depend on the model or
on the server's caps (budget range, classes, steps, images, seeds) are made by `ModelService.make_job`.
Every refusal is a `FieldError`: the app answers it with a 4xx JSON body
{"error": {"field": ..., "message": ...}} and goes on serving.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from elit.errors import UserError


class FieldError(UserError):
    """A request field the server refuses; `status` is the HTTP status to answer with."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status = field, message, status


@dataclass(frozen=True)
class Limits:
    """Caps no request can exceed: together they bound what the server ever allocates
    (images per forward <= max_batch_images, images waiting <= max_queue_images)."""
    max_steps: int = 100
    max_images: int = 8            # per request
    max_batch_images: int = 16     # per forward call
    max_queue_images: int = 256    # waiting, all requests together
    max_seed: int = 2**32 - 1      # a seed, and the last seed of a request
    max_deadline_ms: float = 600_000.0
    max_body_bytes: int = 8192
    max_prompt_chars: int = 1000   # a prompt (and a negative prompt) of a text model
    # lambda: far beyond any useful guidance (w = 1 + lambda), and far below where the guided velocity
    # overflows float32 (scale 1e300 drew an all-black PNG); the CLI refuses such samples after the fact
    max_scale: float = 100.0

    def __post_init__(self):
        if self.max_images > self.max_batch_images:
            raise UserError(f"max images per request ({self.max_images}) cannot exceed the batch cap "
                            f"({self.max_batch_images})")
        if min(self.max_steps, self.max_images, self.max_batch_images, self.max_queue_images, self.max_body_bytes,
               self.max_prompt_chars) < 1:
            raise UserError("every server cap must be at least 1")
        if not 0 < self.max_scale < 1e6:
            raise UserError(f"the guidance scale cap must lie in (0, 1e6), got {self.max_scale}")

    def to_dict(self) -> dict:
        return asdict(self)


# A JSON number, never a string or a boolean (true would be 1 ms), and never Inf (1e400 parses as it).
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
MAX_NESTING = 4   # the body is an object of scalars; deeper JSON is refused before it is parsed


class ImageRequest(BaseModel):
    """The JSON body of POST /v1/images. Give `budget` (latents per group, or "full") or
    `deadline_ms` (the server picks the budget and steps), not both; neither means the full budget.
    A class model takes `label`, a text model `prompt` (and `negative_prompt`, cfg / ccfg's
    unconditional input). Every field is strictly typed: "500" is not 500, true is not 1."""
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), strict=True)

    model: str | None = None
    label: Union[StrictInt, str, None] = None
    prompt: str | None = None
    negative_prompt: str | None = None
    seed: StrictInt = 0
    num_images: StrictInt = 1
    steps: StrictInt | None = None
    sampler: Literal["euler", "heun"] = "euler"
    guidance: Literal["none", "cfg", "ccfg", "ag"] = "none"
    scale: Number | None = None
    weak_budget: StrictInt | None = None
    budget: Union[StrictInt, Literal["full"], None] = None
    deadline_ms: Number | None = None
    format: Literal["png", "json"] = "png"


_TYPE_WORDS = {"int_type": "an integer", "int_from_float": "an integer", "float_type": "a number",
               "finite_number": "a finite number", "string_type": "a string"}


# fields of two types: the error names both, not the one pydantic tried first
_FIELD_WORDS = {"budget": 'an integer (latents per group) or "full"', "label": "a class id (an integer) or a class name"}
_JSON_NAMES = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null (or an empty body)"}


def nesting_depth(body: bytes) -> int:
    """How deeply the JSON text nests arrays and objects (brackets inside strings do not count);
    counted without recursion, so no body can exhaust the parser's stack."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            escaped, in_string = (False, True) if escaped else (byte == 0x5C, byte != 0x22)
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def parse_request(data) -> ImageRequest:
    """A parsed body, or the FieldError of its first bad field."""
    if not isinstance(data, dict):
        raise FieldError("body", f"must be a JSON object, got {_JSON_NAMES.get(type(data), type(data).__name__)}", 400)
    try:
        req = ImageRequest.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = [str(p) for p in first["loc"] if not isinstance(p, int)]
        # a union reports the member type it tried ("budget.int"): name the field only
        field = loc[0] if loc else "body"
        if first["type"] == "extra_forbidden":
            return_fix = f"unknown field; known fields: {', '.join(ImageRequest.model_fields)}"
            raise FieldError(field, return_fix) from None
        got = first.get("input")
        expected = _FIELD_WORDS.get(field) or _TYPE_WORDS.get(first["type"])
        if expected:   # strict types: "500" and true are not numbers, 2.0 is not an integer
            note = {str: " (a JSON string: send the number itself)", bool: " (true/false is not a number)"}
            numeric = field not in _FIELD_WORDS or isinstance(got, bool)
            raise FieldError(field, f"must be {expected}, got {got!r}" + (note.get(type(got), "") if numeric else "")) \
                from None
        raise FieldError(field, f"{first['msg']} (got {got!r})") from None
    if req.guidance == "none" and req.weak_budget is not None:   # else echoed although no weak pass runs
        raise FieldError("weak_budget", "no weak pass runs with guidance \"none\"; give guidance ccfg or ag, "
                                        "or leave weak_budget out")
    return req
