"""(message type, trigger event) → translator. Explicit registration; registering a pair twice raises.

Unknown pairs are answered AR with ERR 200 (unsupported message type) or 201 (unsupported event).
"""

from __future__ import annotations

from collections.abc import Callable

from adapters.hl7v2.messages import adt_a01, adt_a40, orm_o01, oru_r01, ref_i12
from adapters.hl7v2.parse import Message
from adapters.hl7v2.transaction import Context, Translation, TranslationError

Translator = Callable[[Message, Context], Translation]


class Router:
    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], Translator] = {}

    def register(self, message_type: str, trigger: str, translator: Translator) -> None:
        key = (message_type.upper(), trigger.upper())
        if key in self._routes:
            raise ValueError(f"translator for {key[0]}^{key[1]} registered twice")
        self._routes[key] = translator

    def resolve(self, message_type: str, trigger: str) -> Translator:
        translator = self._routes.get((message_type.upper(), trigger.upper()))
        if translator is not None:
            return translator
        if not message_type:
            raise TranslationError("message type is empty", "MSH-9", "101")
        if any(t == message_type.upper() for t, _ in self._routes):
            raise TranslationError(f"event '{trigger}' of {message_type} is not supported", "MSH-9.2", "201")
        raise TranslationError(f"message type '{message_type}^{trigger}' is not supported", "MSH-9", "200")

    def routes(self) -> list[tuple[str, str]]:
        return sorted(self._routes)


def build_router() -> Router:
    router = Router()
    for trigger in adt_a01.TRIGGERS:
        router.register("ADT", trigger, adt_a01.translate)
    router.register("ADT", "A40", adt_a40.translate)
    router.register("ORM", "O01", orm_o01.translate)
    router.register("OML", "O21", orm_o01.translate)
    router.register("ORU", "R01", oru_r01.translate)
    for trigger in ("I12", "I13", "I14"):
        router.register("REF", trigger, ref_i12.translate)
    router.register("RRI", "I12", ref_i12.translate)
    return router
