"""The ledger core: a pure, synchronous, deterministic state machine. No I/O, clock or randomness.

Glossary (one meaning per word):
- token: the unit of money; stored as integer micro-tokens (``*_micro``), 1 token = 1,000,000 µ.
- account: a balance. Agent accounts are agent ids; system accounts start with ``@``
  (``@mint``, ``@llm.<model>``, ``@fees``, ``@escrow``, ``@pool.<id>``, ``@rounding``).
- posting: one double-entry movement, debiting one account and crediting another.
- hold: funds moved to ``@escrow`` pending a decision: posted (paid out, the rest returned) or
  voided (returned). LLM authorizations, auction budgets and task escrows are holds.
- escrow: a hold that pays a task's executor when the result is verified.
- spend: an inference payment (direct or through a hold); only spends count toward rate limits.
- reserve: the balance an agent must keep after any debit it initiates.
- refusal: a business "no", returned as a value with a stable ``ErrorCode``; it changes nothing.
- now_ns: the exchange clock, stamped by the shell on every command and journaled with it.
"""
