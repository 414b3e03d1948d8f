// builtin:read-only's rules, in JavaScript: Get*, List*, Describe* and Head* calls pass
// when every (IAM action, resource) pair they need is a read too; anything else waits for
// the approvers in the settings (default ["oncall"]).
// Built into a component with componentize-js (scripts/build-guests).
import settings from 'settings';

const READ_VERBS = ['Get', 'List', 'Describe', 'Head'];

// A read verb as a whole word of the PascalCase operation: GetObject, not Getaway.
function isRead(action) {
  const op = action.includes(':') ? action.slice(action.lastIndexOf(':') + 1) : action;
  return READ_VERBS.some((verb) => {
    if (!op.startsWith(verb)) return false;
    const next = op.charAt(verb.length);
    return next === '' || (next >= 'A' && next <= 'Z');
  });
}

function prompt(facet) {
  const account = facet.accountName ? `${facet.accountName} (${facet.account})` : facet.account;
  let text = `in account ${account}: `;
  if (facet.principal) text += `${facet.principal} wants `;
  text += facet.iamAction || `${facet.service}:${facet.action}`;
  if (facet.resources.length > 0) text += ` on ${facet.resources.join(', ')}`;
  return text;
}

// Every pair the call needs (contract 0.2.0): a read that also writes waits.
function pairsAreReads(facet) {
  return (facet.authorizations ?? []).every(({ action }) => {
    const name = action.slice(action.lastIndexOf(':') + 1);
    return isRead(name) || name === 'GET' || name === 'HEAD';
  });
}

export function evaluate(facet) {
  const action = facet.action || (facet.iamAction.split(':')[1] ?? '');
  if (isRead(action) && pairsAreReads(facet)) return { tag: 'allow' };

  let parsed;
  try {
    parsed = JSON.parse(settings() || '{}');
  } catch (e) {
    return { tag: 'deny', val: `read-only: invalid settings: ${e.message}` };
  }
  const unknown = Object.keys(parsed).filter((k) => k !== 'approvers');
  if (unknown.length > 0) {
    return { tag: 'deny', val: `read-only: invalid settings: unknown field ${unknown[0]}` };
  }
  const approvers = parsed.approvers ?? ['oncall'];
  if (!Array.isArray(approvers) || approvers.length === 0 || !approvers.every((a) => typeof a === 'string')) {
    return { tag: 'deny', val: 'read-only: invalid settings: approvers must be a non-empty list of names' };
  }
  return { tag: 'approve', val: { approvers, prompt: prompt(facet) } };
}
