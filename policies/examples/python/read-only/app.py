"""builtin:read-only's rules, in Python: Get*, List*, Describe* and Head* calls pass
when every (IAM action, resource) pair they need is a read too; anything else waits for
the approvers in the settings (default ["oncall"]).
Built into a component with componentize-py (scripts/build-guests)."""

import json

import wit_world
from wit_world.imports import types

READ_VERBS = ("Get", "List", "Describe", "Head")


def is_read(action: str) -> bool:
    """A read verb as a whole word of the PascalCase operation: GetObject, not Getaway."""
    op = action.rsplit(":", 1)[-1]
    for verb in READ_VERBS:
        if op.startswith(verb):
            rest = op[len(verb):]
            if rest == "" or rest[0].isupper():
                return True
    return False


def prompt(facet: types.AwsFacet) -> str:
    account = f"{facet.account_name} ({facet.account})" if facet.account_name else facet.account
    text = f"in account {account}: "
    if facet.principal:
        text += f"{facet.principal} wants "
    text += facet.iam_action or f"{facet.service}:{facet.action}"
    if facet.resources:
        text += " on " + ", ".join(facet.resources)
    return text


def pairs_are_reads(facet: types.AwsFacet) -> bool:
    """Every pair the call needs (contract 0.2.0): a read that also writes waits."""
    for pair in facet.authorizations:
        name = pair.action.rsplit(":", 1)[-1]
        if not (is_read(name) or name in ("GET", "HEAD")):
            return False
    return True


class WitWorld(wit_world.WitWorld):
    def evaluate(self, facet: types.AwsFacet) -> types.Verdict:
        action = facet.action or facet.iam_action.partition(":")[2]
        if is_read(action) and pairs_are_reads(facet):
            return types.Verdict_Allow()
        try:
            settings = json.loads(wit_world.settings() or "{}")
        except ValueError as e:
            return types.Verdict_Deny(f"read-only: invalid settings: {e}")
        unknown = [k for k in settings if k != "approvers"]
        if unknown:
            return types.Verdict_Deny(f"read-only: invalid settings: unknown field {unknown[0]}")
        approvers = settings.get("approvers", ["oncall"])
        if not approvers or not all(isinstance(a, str) for a in approvers):
            return types.Verdict_Deny(
                "read-only: invalid settings: approvers must be a non-empty list of names"
            )
        return types.Verdict_Approve(types.Approval(approvers=approvers, prompt=prompt(facet)))
