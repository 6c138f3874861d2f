/*
 * PageProtocol.pml: the cross-process page protocol of a shared VolatileFile,
 * as a Promela model that .ci/model checks exhaustively with spin (2 and 3
 * processes, 2 pages). It follows the code beside it, step by step:
 *
 *   purge    VolatileFile+Purge.swift: withPurgeLock (try the OFD lock; a
 *            PeerWait between tries), recoverIfNeeded, reclaimDeadSlots,
 *            purgeLocked (snapshot purgeable, lock 00 -> 10, re-check the
 *            rule, unlock what is no longer purgeable), punch (intent
 *            "punching [run]", complete: punch, notePurge, 10 -> 11), end.
 *   pin      FileMapping.markNonVolatile -> VolatileFile.unmark: record the
 *            pin privately (recordPins), publish it (PartyMap.settle), one
 *            load of the page state (fast path), else settle: collect
 *            notices, repopulate (markPresent: wait while locked, 11 -> 00),
 *            take late notices and repopulate again until none.
 *   wait     waitForLockedPage: purge lock free -> recover (a dead locker),
 *            from the second look also break orphaned locks; held by a live
 *            process -> wait on, or give up (.peerNotResponding).
 *   vote     FileMapping.markVolatile: clear the private pin record, vote
 *            (a party holding a notice keeps it).
 *   touch    fault_handler.c, handle_shared_page: the private pin record
 *            first; then the page state and the intent record, read as one
 *            (the handler's seqlock); never a wait. By default one atomic
 *            look; with SPLIT_TOUCH the code's steps one by one: pin record,
 *            state + intent (SIGBUS decision), fill_page, look again, and on
 *            "purged or being punched" record the page as a stale fill
 *            (shared_undo_fill: undone in the handler's own mapping, which
 *            the model does not track, and recorded in the mapping's
 *            stale-fill table; never a punch of the file) and look again.
 *   drain    VolatileFile.punchStaleFills (SPLIT_TOUCH): the mapper's
 *            process, holding the purge lock (after recovery), takes its
 *            recorded stale fills and punches each the way an optimistic
 *            access's faults are (punchPurgedAgain): intent "punching
 *            [page]" first, lock only a page still purged (11 -> 10),
 *            complete (punch, notices, 10 -> 11); a page a pin repopulated
 *            meanwhile is left alone. Nondeterministically between the
 *            mapper's operations and before it is done (the code: a pin,
 *            a close, every holder of the purge lock in the process); a
 *            purge lock held by another process gives up (PeerWait), the
 *            record stays.
 *   crash    any process dies at any step (`unless`): the kernel drops its
 *            OFD locks (purge lock; its slot's liveness byte); its slot
 *            stays until a survivor's purge reclaims it.
 *   slots    (SLOT_SCRIBBLE) a peer writes "free" over a live mapper's slot
 *            state (slotLive, the hint); the OFD byte (alive[q]: the kernel
 *            holds it while the process lives) is the truth:
 *            Sidecar.purgeable and notePurge count a slot that is not free
 *            OR whose byte is held (AliveSlots, VolatileFile+Slots.swift);
 *            the owner's pin writes its record again (repairSlot, called
 *            from FileMapping.markNonVolatile); a Claimer (claimSlot) takes
 *            a free slot (free -> claiming), tries its byte, and gives it
 *            back when the owner is alive, else reclaims it (marks cleared).
 *   stop     any process stops for ever at any step, holding what it holds.
 *
 * The file marked every page volatile (fvrange), so a page is purgeable iff
 * no slot that is not free pins it (Sidecar.purgeable). Optimistic accesses
 * and the file's own non-volatile mark are not modelled.
 *
 * Properties (assertions; spin also checks for invalid end states):
 *   P1  a page a live process pins (its pin returned, no vote since) is
 *       never punched;
 *   P2  a pin that reports a page intact: the page was not punched since
 *       the process last knew its contents (its previous pin's return; a
 *       party that never pinned the page is promised nothing: a purge
 *       gives a neutral party no notice);
 *   P3  after a recovery, no page is left locked;
 *   P4  the handler raises SIGBUS only on a page a purge decided to punch
 *       (its intent said "punching" over it), never on a page this process
 *       pins, whatever a peer scribbled (SCRIBBLE);
 *   P5  no deadlock: every wait on another process is bounded (invalid end
 *       states are errors; a stopped process ends in a valid end state);
 *   P6  (SLOT_SCRIBBLE) a claimer never reclaims a slot whose owner is
 *       alive; P1 and P2 hold with a slot written "free" (no escape: the
 *       `scribbled` ghost is for page-state scribbles only).
 *
 * Mutations (each must make the check fail; .ci/model runs them):
 *   NO_RECHECK     the purge does not re-read the rule after locking (P1);
 *   OLD_HANDLER    the handler takes a locked page for purged (it did after
 *                  200 ms: issue 18, 3a) (P4);
 *   NO_PIN_RECORD  the handler decides from the sidecar alone (3c) (P4);
 *   UNBOUNDED      waits on the purge lock and on locked pages have no
 *                  bound (3b) (P5);
 *   NO_SLOT_LIVENESS  purgeable/notePurge trust the state word alone (the
 *                  second review's "pins stop counting") (P1);
 *   OLD_CLAIM      a claimer that cannot take the byte reclaims the slot
 *                  anyway (the old 1 s timeout, VolatileFile+Slots.swift
 *                  before the fix) (P6, P1);
 *   OLD_DISCARD    (SPLIT_TOUCH) the handler undoes a fill that may have
 *                  landed after a punch by punching the file's page itself
 *                  (MADV_REMOVE, the old shared_discard), unordered against
 *                  a pin's repopulation (P1).
 *
 * FIXED DEFECT found by SPLIT_TOUCH (2 mappers; OLD_DISCARD keeps it): mapper
 * A touches a present page and fills it; a purge punches it (11); A looks
 * again, finds 11; mapper B pins the page (repopulates 11 -> 00, its pin
 * returns, it writes); the old handler's MADV_REMOVE then punched B's pinned
 * page without a notice (P1), since the handler cannot take the purge lock
 * and its punch was not ordered against repopulation. Now the handler only
 * records the page; the drain punches it under the purge lock, and only if
 * it is still purged. Regression test on the real kernel:
 * FileStaleFillTests.aFaultsDiscardNeverPunchesAPinnedPage.
 */

#ifndef MAPPERS
#define MAPPERS 1
#endif
#ifndef PURGERS
#define PURGERS 1
#endif
#define NPROC (MAPPERS + PURGERS)
#ifndef OPS
#define OPS 3       /* operations of each mapper */
#endif
#ifndef PURGES
#define PURGES 1    /* purges of each purger */
#endif
#ifndef TOUCHERS
#define TOUCHERS MAPPERS   /* (SPLIT_TOUCH) mappers 0 ..< TOUCHERS may touch */
#endif
#define NPAGES 2
#define FREE 255

/* content map (Sidecar.content): 00 present, 10 locked, 11 purged */
#define PRESENT 0
#define LOCKED 2
#define PURGED 3
/* party marks (PartyMap): 00 neutral, 01 voted, 10 pinned, 11 voted + notice */
#define NEUTRAL 0
#define VOTED 1
#define PINNED 2
#define NOTICE 3
/* purge intent (PurgeControl) */
#define IDLE 0
#define LOCKING 1
#define PUNCHING 2

#define IX(p, g) ((p) * NPAGES + (g))
/* Whether slot q's marks count for pins and notices: its state is not free,
 * or (AliveSlots) its OFD byte is held, i.e. its owner is alive. */
#ifdef NO_SLOT_LIVENESS
#define COUNTS(q) (slotLive[q] || claiming[q])
#else
#define COUNTS(q) (slotLive[q] || claiming[q] || alive[q])
#endif

byte content[NPAGES];
byte mark[NPROC * NPAGES];
bit slotLive[NPROC];            /* the slot's state word: not free (a hint a peer may scribble) */
bit claiming[NPROC];            /* a Claimer moved it free -> claiming */
bit alive[NPROC];
bit stopped[NPROC];
byte purgeLock = FREE;          /* the OFD lock on byte slotCount: its holder */
byte phase = IDLE;
byte punchLo, punchHi;
bit pinRecord[NPROC * NPAGES]; /* FileMapping's private pin record */
bit staleRec[NPROC * NPAGES];  /* the mapping's stale-fill table (SPLIT_TOUCH) */

/* ghosts */
bit stale[NPROC * NPAGES];      /* punched since the process last knew its contents */
bit tracking[NPROC * NPAGES];  /* a pin of it returned once (a neutral party is promised nothing) */
bit pinDone[NPROC * NPAGES];   /* its pin returned, no vote since */
bit doomed[NPAGES];            /* a purge's intent said "punching" over it, not repopulated since */
bool scribbled;

/* Punches page g if still locked, as complete() does: punch, purge notice
 * to every party that voted or pinned it, 10 -> 11. */
inline completePage(g) {
  if
  :: content[g] == LOCKED ->
     d_step {   /* the punch */
       q = 0;
       do
       :: q < NPROC -> assert(scribbled || !(alive[q] && pinDone[IX(q, g)])); q++   /* P1 */
       :: else -> break
       od;
       q = 0;
       do :: q < NPROC -> stale[IX(q, g)] = 1; q++ :: else -> break od;
       q = 0
     };
     d_step {   /* notePurge (one CAS a party; the parties' words are independent) */
       q = 0;
       do
       :: q < NPROC ->
          if :: COUNTS(q) && (mark[IX(q, g)] == VOTED || mark[IX(q, g)] == PINNED) -> mark[IX(q, g)] = NOTICE :: else fi;
          q++
       :: else -> break
       od;
       q = 0
     };
     content[g] = PURGED
  :: else
  fi
}

inline complete(lo, hi) {
  i = lo;
  do
  :: i < hi -> completePage(i); i++
  :: else -> break
  od;
  i = 0
}

/* beginPunching: the run's range, then the phase; the pages of the run that
 * are locked are now doomed. */
inline beginPunching(lo, hi) {
  atomic {
    punchLo = lo; punchHi = hi; phase = PUNCHING;
    i = lo;
    do
    :: i < hi -> if :: content[i] == LOCKED -> doomed[i] = 1 :: else fi; i++
    :: else -> break
    od;
    i = 0
  }
}

/* recoverIfNeeded (purge lock held): complete the run being punched, undo
 * every other lock, idle. */
inline recover() {
  if
  :: phase == PUNCHING -> complete(punchLo, punchHi)
  :: else
  fi;
  if
  :: phase != IDLE ->
     d_step {   /* release every lock of the lock range (a CAS a word) */
       i = 0;
       do
       :: i < NPAGES -> if :: content[i] == LOCKED -> content[i] = PRESENT :: else fi; i++
       :: else -> break
       od;
       i = 0
     };
     phase = IDLE
  :: else
  fi;
  assert(scribbled || (content[0] != LOCKED && content[1] != LOCKED))   /* P3 */
}

/* Sidecar.purgeable: no slot that is not free pins the page (one load a slot). */
inline purgeable(g) {
  d_step {   /* the loads of the slots' words (each sequentially consistent) */
    pur = 1; q = 0;
    do
    :: q < NPROC -> if :: COUNTS(q) && mark[IX(q, g)] == PINNED -> pur = 0 :: else fi; q++
    :: else -> break
    od;
    q = 0
  }
}

/* waitForLockedPage for page g of process p. */
inline waitLocked(p, g) {
  if
  :: atomic { purgeLock == FREE -> purgeLock = p } ->
     recover();
#ifdef SCRIBBLE
     if
     :: looks >= 1 ->   /* breakOrphanedLocks */
        k = 0;
        do
        :: k < NPAGES ->
           if
           :: content[k] == LOCKED -> phase = LOCKING; beginPunching(k, k + 1); completePage(k); phase = IDLE
           :: else
           fi;
           k++
        :: else -> break
        od;
        k = 0
     :: else
     fi;
#endif
     looks = 1;
     purgeLock = FREE
  :: else ->
#ifdef UNBOUNDED
     (purgeLock == FREE || content[g] != LOCKED)
#else
     if
     :: skip
     :: timedOut = 1   /* PeerWait: .peerNotResponding */
     fi
#endif
  fi
}

/* markPresent over page g: wait while locked, 11 -> 00. */
inline repopulate(p, g) {
  do
  :: content[g] == LOCKED -> waitLocked(p, g); if :: timedOut -> break :: else fi
  :: atomic { content[g] == PURGED -> content[g] = PRESENT; doomed[g] = 0; purgedSeen = 1 }; break
  :: content[g] == PRESENT -> break
  od
}

/* punchStaleFills of process p (SPLIT_TOUCH): under the purge lock, after
 * recovery, each recorded page: intent first, lock it only if still purged
 * (11 -> 10), complete; the record is taken as it is punched. */
inline drainStale(p) {
  if
  :: atomic { purgeLock == FREE -> purgeLock = p } ->
     recover();
     k = 0;
     do
     :: k < NPAGES ->
        if
        :: staleRec[IX(p, k)] ->
           staleRec[IX(p, k)] = 0;
           phase = LOCKING;                 /* beginLocking */
           beginPunching(k, k + 1);
           atomic { if :: content[k] == PURGED -> content[k] = LOCKED :: else fi };
           completePage(k);
           phase = IDLE                     /* end */
        :: else
        fi;
        k++
     :: else -> break
     od;
     k = 0;
     purgeLock = FREE
  :: else   /* held by another process: PeerWait gives up, the records stay */
  fi
}

/* A mapper: pins, votes and touches pages of its mapping. */
proctype Mapper(byte p) {
  byte g, q, i, k, ops, st, rounds;
  bit looks, lost, purgedSeen, timedOut, busClear, inPunch;
  {
    do
#ifdef SPLIT_TOUCH
    :: (staleRec[IX(p, 0)] || staleRec[IX(p, 1)]) -> drainStale(p)   /* between operations */
#endif
    :: ops < OPS ->
       ops++;
       select(g : 0 .. NPAGES - 1);
       if
       :: /* vote */
          pinRecord[IX(p, g)] = 0;
          pinDone[IX(p, g)] = 0;
          atomic { if :: mark[IX(p, g)] == NEUTRAL || mark[IX(p, g)] == PINNED -> mark[IX(p, g)] = VOTED :: else fi }
       :: /* pin */
          lost = 0; purgedSeen = 0; timedOut = 0; looks = 0;
          pinRecord[IX(p, g)] = 1;
          slotLive[p] = 1;   /* repairSlot: the owner writes its record again */
          atomic { lost = (mark[IX(p, g)] == NOTICE); mark[IX(p, g)] = PINNED };
          if
          :: content[g] == PRESENT ->   /* the fast path's one load */
             atomic { lost = lost || mark[IX(p, g)] == NOTICE; mark[IX(p, g)] = PINNED };
             if :: !lost -> goto intact :: else fi
          :: else
          fi;
          atomic { lost = lost || mark[IX(p, g)] == NOTICE; mark[IX(p, g)] = PINNED };   /* collectNotices */
          repopulate(p, g);
          if :: timedOut -> goto pinFailed :: else fi;
          do
          :: atomic { mark[IX(p, g)] == NOTICE -> mark[IX(p, g)] = PINNED; lost = 1 };
             repopulate(p, g);
             if :: timedOut -> goto pinFailed :: else fi
          :: atomic { mark[IX(p, g)] != NOTICE } -> break
          od;
          if
          :: lost || purgedSeen ->   /* reported purged: the process refills it */
             atomic { stale[IX(p, g)] = 0; pinDone[IX(p, g)] = 1; tracking[IX(p, g)] = 1 };
             goto pinEnd
          :: else
          fi;
intact:
          atomic {
            assert(scribbled || !tracking[IX(p, g)] || !stale[IX(p, g)]);   /* P2 */
            stale[IX(p, g)] = 0; pinDone[IX(p, g)] = 1; tracking[IX(p, g)] = 1
          };
          goto pinEnd;
pinFailed:   /* .peerNotResponding: the pin stays published, nothing learnt */
          skip;
pinEnd:
          lost = 0; purgedSeen = 0; timedOut = 0; looks = 0
#ifdef SPLIT_TOUCH
       :: p < TOUCHERS ->
          /* touch: fault_handler.c, handle_shared_page, its steps one by one
           * (outside an optimistic access: a purged page raises SIGBUS) */
#ifdef NO_PIN_RECORD
          busClear = 0;
#else
          busClear = pinRecord[IX(p, g)];            /* pinned_here: fill, resume */
#endif
          if
          :: !busClear ->
             do
             :: atomic {                              /* vr_page_state, being_punched (a seqlock) */
                  st = content[g];
                  inPunch = (phase == PUNCHING && punchLo <= g && g < punchHi);
                  /* The SIGBUS decision, checked against what was true when it was read */
                  if
                  :: st == PURGED || (st == LOCKED && inPunch) ->
                     assert(!pinDone[IX(p, g)]);            /* P4: never on a page it pins */
                     assert(scribbled || doomed[g]);        /* P4: only on a page a purge decided to punch */
                     st = FREE                              /* SIGBUS */
#ifdef OLD_HANDLER
                  :: st == LOCKED ->                        /* "locked for 200 ms: purged" */
                     assert(!pinDone[IX(p, g)]);
                     assert(scribbled || doomed[g]);
                     st = FREE
#endif
                  :: else
                  fi
                };
                if
                :: st == FREE -> break                      /* SIGBUS */
                :: else ->
                   skip;                                    /* fill_page */
                   atomic {                                 /* look again */
                     st = content[g];
                     inPunch = (phase == PUNCHING && punchLo <= g && g < punchHi)
                   };
                   if
                   :: st == PRESENT || (st == LOCKED && !inPunch) -> break
                   :: else ->
                      if
                      :: rounds >= 1 -> break               /* (the code: 1000 rounds, then SIGBUS) */
                      :: else
                      fi;
                      rounds++;
#ifdef OLD_DISCARD
                      /* the old shared_discard: MADV_REMOVE punches the file's page */
                      d_step {
                        q = 0;
                        do
                        :: q < NPROC -> assert(scribbled || !(alive[q] && pinDone[IX(q, g)])); q++   /* P1 */
                        :: else -> break
                        od;
                        q = 0;
                        do :: q < NPROC -> stale[IX(q, g)] = 1; q++ :: else -> break od;
                        q = 0
                      }
#else
                      /* shared_undo_fill: undone in this mapping, recorded (no punch) */
                      staleRec[IX(p, g)] = 1
#endif
                   fi
                fi
             od;
             st = 0; inPunch = 0; rounds = 0
          :: else   /* pinned here: filled */
          fi
#else
       :: /* touch: the fault handler's decision, one atomic look */
          atomic {
#ifdef NO_PIN_RECORD
             busClear = 0;
#else
             busClear = pinRecord[IX(p, g)];
#endif
             if
             :: !busClear ->
                if
                :: content[g] == PURGED || (content[g] == LOCKED && phase == PUNCHING && punchLo <= g && g < punchHi) ->
                   assert(!pinDone[IX(p, g)]);              /* P4: never on a page it pins */
                   assert(scribbled || doomed[g])           /* P4: only on a page a purge decided to punch */
#ifdef OLD_HANDLER
                :: content[g] == LOCKED ->                  /* "locked for 200 ms: purged" */
                   assert(!pinDone[IX(p, g)]);
                   assert(scribbled || doomed[g])
#endif
                :: else   /* filled */
                fi
             :: else   /* pinned here: filled */
             fi
          }
#endif
       fi
    :: else -> break
    od
  } unless { !alive[p] || stopped[p] };
  /* Done, stopped or dead. A stopped process may still be killed. */
end_halted:
  !alive[p];
  atomic { if :: purgeLock == p -> purgeLock = FREE :: else fi }   /* the kernel drops its OFD locks */
}


/* A purger: purges the whole file PURGES times (recovering a dead
 * holder's work and reclaiming dead slots first). Its own slot pins and
 * votes nothing. */
proctype Purger(byte p) {
  byte g, q, i, lo, hi, kept, ops;
  bit pur, locked;
  {
    do
    :: ops < PURGES ->
       ops++;
          do
          :: atomic { purgeLock == FREE -> purgeLock = p }; break
#ifdef UNBOUNDED
          :: atomic { purgeLock != FREE && purgeLock != p } -> (purgeLock == FREE)
#else
          :: purgeLock != FREE -> goto purgeEnd   /* PeerWait: .peerNotResponding */
#endif
          od;
          recover();
          d_step {   /* reclaimDeadSlots */
            q = 0;
            do
            :: q < NPROC ->
               if
               :: slotLive[q] && !alive[q] ->
                  i = 0;
                  do :: i < NPAGES -> mark[IX(q, i)] = NEUTRAL; i++ :: else -> break od;
                  slotLive[q] = 0
               :: else
               fi;
               q++
            :: else -> break
            od;
            q = 0; i = 0
          };
          phase = LOCKING;
          kept = 0; g = 0;
          do
          :: g < NPAGES ->
             purgeable(g);
             locked = 0;
             if :: pur -> atomic { if :: content[g] == PRESENT -> content[g] = LOCKED; locked = 1 :: else fi } :: else fi;
             if
             :: locked ->
#ifndef NO_RECHECK
                purgeable(g);
                if :: pur -> kept = kept | (1 << g) :: else -> content[g] = PRESENT fi
#else
                kept = kept | (1 << g)
#endif
             :: else
             fi;
             g++
          :: else -> break
          od;
          if
          :: kept != 0 ->   /* one run: 2 pages are adjacent */
             lo = ((kept & 1) -> 0 : 1); hi = ((kept & 2) -> 2 : 1);
             beginPunching(lo, hi);
             complete(lo, hi);
             phase = LOCKING   /* endPunching */
          :: else
          fi;
          kept = 0; lo = 0; hi = 0; g = 0;
          phase = IDLE;
          purgeLock = FREE;
purgeEnd:
          pur = 0; locked = 0
    :: else -> break
    od
  } unless { !alive[p] || stopped[p] };
  /* Done, stopped or dead. A stopped process may still be killed. */
end_halted:
  !alive[p];
  atomic { if :: purgeLock == p -> purgeLock = FREE :: else fi }   /* the kernel drops its OFD locks */
}


#ifdef SLOT_SCRIBBLE
/* claimSlot (VolatileFile+Slots.swift) of a process that maps the file, on
 * mapper q's slot: tryClaim (free -> claiming), then its OFD byte: held (the
 * owner is alive) -> giveBack (claiming -> free), never reclaimed; free ->
 * the slot is its own: marks cleared (clearMarks), published, and (not
 * modelled further) closed again: free. */
proctype Claimer(byte q) {
  byte i;
  if
  :: atomic { !slotLive[q] && !claiming[q] -> claiming[q] = 1 };
     if
     :: alive[q] -> claiming[q] = 0   /* giveBack */
#ifdef OLD_CLAIM
     :: alive[q] ->                    /* the old timeout: finishReclaim */
        d_step { i = 0; do :: i < NPAGES -> mark[IX(q, i)] = NEUTRAL; i++ :: else -> break od; i = 0 };
        assert(!alive[q]);             /* P6 */
        claiming[q] = 0
#endif
     :: !alive[q] ->
        d_step { i = 0; do :: i < NPAGES -> mark[IX(q, i)] = NEUTRAL; i++ :: else -> break od; i = 0 };
        claiming[q] = 0
     fi
  :: skip
  fi
}
#endif

/* One event at most: a process dies, or stops (and may die later: a
 * stopped process can still be killed), or (SCRIBBLE) a peer writes a
 * state over a page. */
active proctype Chaos() {
  byte v;
  if
#ifndef SCRIBBLE
  :: select(v : 0 .. NPROC - 1); alive[v] = 0
  :: select(v : 0 .. NPROC - 1); stopped[v] = 1;
     if :: alive[v] = 0 :: skip fi
#ifdef SLOT_SCRIBBLE
  :: select(v : 0 .. MAPPERS - 1); slotLive[v] = 0   /* a peer writes "free" over a live slot's state */
#endif
#else
  :: atomic {
       scribbled = 1;
       select(v : 0 .. NPAGES - 1);
       if
       :: content[v] = PURGED
       :: content[v] = LOCKED
       fi
     }
#endif
  :: skip
  fi
}

init {
  byte p;
  atomic {
    p = 0;
    do
    :: p < NPROC -> alive[p] = 1; slotLive[p] = 1; p++
    :: else -> break
    od;
    p = 0;
    do
    :: p < MAPPERS -> run Mapper(p); p++
    :: p >= MAPPERS && p < NPROC -> run Purger(p); p++
    :: else -> break
    od;
#ifdef SLOT_SCRIBBLE
    run Claimer(0)
#endif
  }
}
