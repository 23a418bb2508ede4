"""Jump-forward: the tokens a sequence's grammar admits in exactly one way from where it is.

They are the output whatever a forward would compute, so the scheduler sends them to the
caller at once and runs them as one prefill chunk instead of a step each. Where the grammar
then admits nothing but a stop (a strict call after its closing tag, a JSON response after
its last brace), the output ends with them: no forward for what follows."""

from __future__ import annotations

import time

import numpy as np

from .engine import EngineStats


def forced_tokens(seq, tokenizer, probe: np.ndarray, stats: EngineStats) -> tuple[list[int], bool]:
    """The forced tokens, accepted into seq's matcher and counted as generated, at most all
    but one of the tokens seq has left (so a sampled token still fits); and whether the
    output ends with them.

    The forced text is tokenized alone and its last token held back: the model then picks
    the token that ends the forced text, which may run on into the free text after it (a
    longer merge), so the ids stay what decoding token by token would give at the seam.
    Where nothing but a stop can follow there is no seam: the last token is taken too.
    Every id goes through the matcher like a sampled one."""
    room = seq.max_tokens - seq.completion
    if seq.matcher is None or room <= 1:
        return [], False
    try:
        text = seq.matcher.find_jump_forward_string()
    except UnicodeDecodeError:
        # The forced bytes stop inside a character (a multi-byte marker such as DeepSeek's
        # <｜tool▁sep｜> on a vocabulary without it): xgrammar cannot hand them over as text,
        # and raising here would end the engine loop, leaving queued requests hanging.
        return [], False
    if not text:
        # Probed only where the grammar has just become complete: in free text (tool_choice
        # auto) it is complete at every token, and a probe each token costs a mask's time.
        was, seq.completed = seq.completed, seq.matcher.is_completed()
        return [], seq.completed and not was and only_stop_left(seq, probe, stats)
    ids = tokenizer.encode(text, add_special_tokens=False)
    taken = []
    for t in ids[:-1][: room - 1]:
        if t in seq.stop_ids or not seq.matcher.accept_token(t):
            break
        taken.append(t)
    ends = False
    # The whole text fits with a token to spare (decoded token by token, its last token
    # would leave room for the stop, not end at max_tokens).
    if len(taken) == len(ids) - 1 and len(ids) < room and ids[-1] not in seq.stop_ids:
        if seq.matcher.accept_token(ids[-1]):
            if only_stop_left(seq, probe, stats):
                taken.append(ids[-1])
                ends = True
            else:
                seq.matcher.rollback(1)
    seq.completed = seq.matcher.is_completed()
    seq.completion += len(taken)
    stats.tokens += len(taken)
    return taken, ends


def only_stop_left(seq, probe: np.ndarray, stats: EngineStats) -> bool:
    """seq's grammar is complete and admits no token but a stop from here: the stop a forward
    would sample is the only one it could. `probe`: a one-row bitmask
    (xgrammar_core.allocate_token_bitmask), overwritten here."""
    if not seq.matcher.is_completed():
        return False
    t0 = time.perf_counter()
    if not seq.matcher.fill_next_token_bitmask(probe, 0):  # it admits every token
        stats.mask_s += time.perf_counter() - t0
        return False
    bits = probe.view(np.uint32)[0]
    for t in seq.stop_ids:
        if t < bits.size * 32:
            bits[t >> 5] &= ~np.uint32(1 << (t & 31))
    stats.mask_s += time.perf_counter() - t0
    return not bits.any()
