"""Whose data a data-subject request is about: a visitor or a user, and every id that the
client's ``alias`` calls tie to them.

A request names one id: a visitor id (the pixel's ``visitorId``, a Segment
``anonymousId``) or a user id (a Segment ``userId``). An ``alias`` message says that two
ids are the same person (``previousId`` → ``userId``, sent by an anonymous visitor), and
every stored alias is kept in ``identity_links``; the request follows those links, both
ways and transitively, so the export and the deletion cover the person under every id
the client declared theirs. Nothing else links ids: a visitor and a user who merely
appear on the same event are not merged (a shared device would merge two people, and an
export must never hand one person another's data).

User ids are stored as the client's ``user_id_storage`` says, so an id is searched in
every form it may have been stored in, whatever the setting is now (it may have changed):
as sent, and as its keyed hash under the client's salt. Pure, apart from the link lookup
the caller passes in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final, NamedTuple

from evothesis.domain import SubjectKind
from evothesis.privacy import pseudonymise

__all__ = ["MAX_ROUNDS", "IdentityLink", "LinkLookup", "Subject", "resolve_subject"]

#: Alias links followed at most this many steps away from the requested id.
MAX_ROUNDS: Final = 100


class IdentityLink(NamedTuple):
    """One stored alias: ``previous_id`` and ``user_id`` as the client stores user ids,
    ``anonymous_id`` the visitor that sent it."""

    previous_id: str
    user_id: str
    anonymous_id: str | None


#: The links that touch any of these user-id forms or visitor ids.
LinkLookup = Callable[[frozenset[str], frozenset[str]], Awaitable[list[IdentityLink]]]


@dataclass(frozen=True, slots=True)
class Subject:
    """The ids a request covers: an event or failed event is the subject's when its visitor
    id is in ``visitor_ids`` or its user id in ``user_ids``."""

    kind: SubjectKind
    requested: str
    visitor_ids: frozenset[str]
    user_ids: frozenset[str]

    @classmethod
    def of_visitor(cls, visitor_id: str) -> Subject:
        """A visitor alone, no links followed (what the export lines are tested with)."""
        return cls(SubjectKind.VISITOR, visitor_id, frozenset({visitor_id}), frozenset())

    @property
    def digest(self) -> str:
        """How audit logs and receipts name the subject: enough to answer "was this id
        deleted?" for someone who knows it, without keeping the id itself."""
        return hashlib.sha256(self.requested.encode()).hexdigest()

    @property
    def ids(self) -> frozenset[str]:
        return self.visitor_ids | self.user_ids


async def resolve_subject(
    kind: SubjectKind, requested: str, salt: bytes | None, links: LinkLookup
) -> Subject:
    """The subject of a request for ``requested`` (a visitor or a user id), with every id
    the client's alias links tie to it; ``salt`` (the client's) gives the hashed forms."""

    def forms(ids: Iterable[str]) -> set[str]:
        found = set(ids)
        if salt:
            found.update(pseudonymise(i, salt) for i in list(found))
        return found

    visitors: set[str] = {requested} if kind is SubjectKind.VISITOR else set()
    users: set[str] = forms([requested]) if kind is SubjectKind.USER else set()
    for _ in range(MAX_ROUNDS):
        # A previous id may be an anonymous id (kept as sent, or hashed like user ids), so
        # visitors are looked for among user-id forms too.
        keys = frozenset(users | forms(visitors))
        found = await links(keys, frozenset(visitors))
        new_users = users | {i for link in found for i in (link.previous_id, link.user_id)}
        new_visitors = visitors | {link.previous_id for link in found}
        new_visitors |= {link.anonymous_id for link in found if link.anonymous_id is not None}
        if new_users == users and new_visitors == visitors:
            break
        users, visitors = new_users, new_visitors
    return Subject(kind, requested, frozenset(visitors), frozenset(users))
