//! The schema's say in the route, as one pure decision: grayshift never
//! moves users onto a side that does not support the current schema (see
//! README, "Schema gate").

use serde::{Deserialize, Serialize};

use super::{Route, State};
use crate::migration::Stance;

/// The split held while no side supports the schema: the route the proxy
/// used when the version left both lists, and the last version read.
/// Persisted with the state, so a restart holds the same split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hold {
    pub version: String,
    pub percent: u8,
    pub rolled_back: bool,
    pub shedding: bool,
    pub gate_closed: bool,
}

impl Hold {
    fn route(&self) -> Route {
        Route {
            percent: self.percent,
            rolled_back: self.rolled_back,
            shedding: self.shedding,
            gate_closed: self.gate_closed,
        }
    }
}

/// The schema gate's last verdict (after a failed read: the stance it
/// left, with the last version read). Persisted on every change, so that
/// a restart knows which route the previous process served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verdict {
    pub version: String,
    pub new_ready: bool,
    pub stable_supported: bool,
}

impl Verdict {
    pub fn stance(&self) -> Stance {
        Stance::of(self.new_ready, self.stable_supported)
    }
}

impl State {
    /// The route for this state under `schema`:
    /// - `Both`: the state's own route.
    /// - `Unread`, `StableOnly`: the gate is closed: percent 0, `force_new`
    ///   included.
    /// - `NewOnly`: past the point of no return: an L1/L3 moves nobody to
    ///   stable unless forced.
    /// - `Neither`: nobody moves. The held route stays, whatever the
    ///   operator, the config, the ramp or a rule changes meanwhile (they
    ///   are recorded and apply once the version is back in a list): moving
    ///   users to stable or to `new` would both put them on a side that
    ///   cannot run the schema. Only a forced L1/L3 (`ctl rollback --force`)
    ///   sends users to stable, as the operator asked. With nothing held (a
    ///   first start, or a replica with no state file, before its second
    ///   read): the desired percent with every active L1/L3 applied — never
    ///   0 % because the gate would be closed, and no rollback blocked that
    ///   was not blocked before.
    pub(crate) fn route_for(&self, schema: Stance) -> Route {
        match schema {
            Stance::Both => self.route_under(false),
            Stance::NewOnly => self.route_under(true),
            Stance::Unread | Stance::StableOnly => Route { percent: 0, gate_closed: true, ..self.route_under(false) },
            Stance::Neither => match &self.schema_hold {
                Some(hold) if self.route_under(true).rolled_back => {
                    Route { percent: 0, rolled_back: true, ..hold.route() }
                }
                Some(hold) => hold.route(),
                None => self.route_under(false),
            },
        }
    }

    /// The route the process that wrote this state served last, rebuilt
    /// from the gate's last verdict kept with it (`None`: no verdict was
    /// ever recorded). Read from the state file at start, before anything
    /// changes it.
    pub(crate) fn route_served_before_restart(&self) -> Option<Route> {
        self.schema_verdict.as_ref().map(|verdict| self.route_for(verdict.stance()))
    }

    /// The state after the schema's stance went from `before` to `now`.
    /// The route in force when the verdict came is the one `before` gave,
    /// or at a start (`before` is `Unread`) the one the previous process
    /// served, `restarted` ([`State::route_served_before_restart`], `None`
    /// with no record of it). `version`: the version read, `None` when it
    /// could not be read (the last one read is kept).
    ///
    /// Entering `Neither` holds the route in force (unless something is
    /// held already): a restart that first reads a version no side supports
    /// holds exactly the route served before it, a rollback or a closed
    /// gate included. With no record nothing is held yet (see
    /// [`State::route_for`]); the next verdict holds what was served.
    /// Leaving `Neither` lets the hold go. Every verdict is recorded.
    pub(crate) fn with_schema(
        &self,
        before: Stance,
        now: Stance,
        restarted: Option<Route>,
        version: Option<&str>,
    ) -> State {
        let last_read = self.schema_verdict.as_ref().map(|v| v.version.as_str());
        let version = version.or(last_read).unwrap_or_default().to_string();
        let in_force = match before {
            Stance::Unread => restarted,
            before => Some(self.route_for(before)),
        };
        let schema_hold = match now {
            Stance::Neither if self.schema_hold.is_some() => self.schema_hold.clone(),
            Stance::Neither => in_force.map(|route| Hold {
                version: version.clone(),
                percent: route.percent,
                rolled_back: route.rolled_back,
                shedding: route.shedding,
                gate_closed: route.gate_closed,
            }),
            _ => None,
        };
        let schema_verdict = match now {
            Stance::Unread => self.schema_verdict.clone(),
            _ => Some(Verdict {
                version,
                new_ready: now.new_ready(),
                stable_supported: matches!(now, Stance::Both | Stance::StableOnly),
            }),
        };
        State { schema_hold, schema_verdict, ..self.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Level;
    use crate::control::state::Activation;

    /// The operator's percent, decided as every change is.
    fn set_percent(s: State, percent: i64) -> State {
        use crate::control::change::{apply, Change};
        use crate::control::state::Actor;
        apply(&s, &Change::SetPercent { percent }, &Actor::Admin, "").unwrap().0
    }

    fn route(percent: u8, rolled_back: bool, gate_closed: bool) -> Route {
        Route { percent, rolled_back, shedding: false, gate_closed }
    }

    fn l1(force: bool) -> Activation {
        Activation {
            reason: "errors".into(),
            actor: "admin".into(),
            since: "2026-01-01T00:00:00Z".into(),
            hook: None,
            hook_detail: None,
            id: None,
            replica: None,
            force,
        }
    }

    fn state(percent: u8, level: Option<bool>) -> State {
        let mut s = State { desired_percent: percent, config_percent: percent, ..State::default() };
        if let Some(force) = level {
            s.rollbacks.insert(Level::L1, l1(force));
        }
        s
    }

    fn held(s: State, r: Route) -> State {
        let hold = Hold {
            version: "c3".into(),
            percent: r.percent,
            rolled_back: r.rolled_back,
            shedding: r.shedding,
            gate_closed: r.gate_closed,
        };
        State { schema_hold: Some(hold), ..s }
    }

    /// `s` as the gate last saw it at `stance`, then written to the state file.
    fn seen(s: State, stance: Stance) -> State {
        s.with_schema(Stance::Both, stance, None, Some("b2"))
    }

    #[test]
    fn the_route_never_moves_users_onto_a_side_that_cannot_run_the_schema() {
        use Stance::*;
        let at50 = route(50, false, false);
        let closed = route(0, false, true);
        // (state, stance, route)
        let cases = [
            (state(50, None), Both, at50),
            (state(50, None), Unread, closed),
            (state(50, None), StableOnly, closed),
            (state(50, None), NewOnly, at50),
            (state(50, Some(false)), Both, route(0, true, false)),
            (state(50, Some(false)), NewOnly, at50),
            (state(50, Some(true)), NewOnly, route(0, true, false)),
            // Neither: the held route, whatever changed since.
            (held(state(50, None), at50), Neither, at50),
            (held(state(50, None), closed), Neither, closed),
            (set_percent(held(state(50, None), at50), 90), Neither, at50),
            (held(state(50, Some(false)), at50), Neither, at50),
            (held(state(50, None), route(0, true, false)), Neither, route(0, true, false)),
            // A forced rollback is the operator's call.
            (held(state(50, Some(true)), at50), Neither, route(0, true, false)),
            // Nothing held (no record of what was served): the desired
            // split, rollbacks applied.
            (state(30, None), Neither, route(30, false, false)),
            (state(30, Some(false)), Neither, route(0, true, false)),
        ];
        for (i, (s, stance, want)) in cases.into_iter().enumerate() {
            assert_eq!(s.route_for(stance), want, "case {i}: {stance:?} {s:?}");
        }
    }

    #[test]
    fn the_hold_is_taken_on_entering_neither_kept_and_let_go_on_leaving() {
        use Stance::*;
        let s = state(50, None);
        let at50 = route(50, false, false);
        let h = s.with_schema(Both, Neither, None, Some("c3"));
        assert_eq!(h.schema_hold.as_ref().map(|h| (h.percent, h.version.as_str())), Some((50, "c3")));
        let closed = s.with_schema(StableOnly, Neither, None, Some("hotfix"));
        assert_eq!(closed.route_for(Neither), route(0, false, true), "closed gate stays closed");
        // Already held (a restart, or an unreadable version in between): kept.
        let again = h.with_schema(StableOnly, Neither, None, Some("d4"));
        assert_eq!(again.schema_hold, h.schema_hold);
        for back in [Both, StableOnly, NewOnly] {
            let next = h.with_schema(Neither, back, None, Some("b2"));
            assert_eq!(next.schema_hold, None, "{back:?}");
            assert_eq!(next.route_for(back), s.route_for(back), "{back:?}");
        }
        assert_eq!(h.route_for(Neither), at50);
    }

    #[test]
    fn a_restart_that_first_reads_neither_holds_the_route_served_before_it() {
        use Stance::*;
        // (state as written by the previous process, its last stance, the route it served)
        let cases = [
            (state(50, Some(false)), Both, route(0, true, false)),
            (state(50, None), StableOnly, route(0, false, true)),
            (state(50, Some(false)), StableOnly, route(0, true, true)),
            (state(50, None), Both, route(50, false, false)),
            (state(50, Some(false)), NewOnly, route(50, false, false)),
        ];
        for (i, (s, last, served)) in cases.into_iter().enumerate() {
            let file = seen(s, last);
            let restarted = file.route_served_before_restart();
            assert_eq!(restarted, Some(served), "case {i}");
            // The config's percent changed meanwhile: recorded, not applied.
            let file = set_percent(file, 90);
            let next = file.with_schema(Unread, Neither, restarted, Some("c3"));
            assert_eq!(next.route_for(Neither), served, "case {i}: nobody moves");
            assert_eq!(next.schema_hold.as_ref().map(|h| h.version.as_str()), Some("c3"));
        }
        // No record (a first start, a replica with no state file): the
        // desired percent with the rollbacks applied, nothing held yet.
        for (s, want) in [(state(30, None), route(30, false, false)), (state(30, Some(false)), route(0, true, false))] {
            assert_eq!(s.route_served_before_restart(), None);
            let next = s.with_schema(Unread, Neither, None, Some("c3"));
            assert_eq!((next.schema_hold.as_ref(), next.route_for(Neither)), (None, want));
            // The next verdict holds what is served.
            let next = next.with_schema(Neither, Neither, None, Some("c3"));
            assert_eq!(set_percent(next, 90).route_for(Neither), want);
        }
    }

    #[test]
    fn an_unreadable_version_keeps_the_last_version_read() {
        use Stance::*;
        let past = state(50, Some(false)).with_schema(Both, NewOnly, None, Some("f9"));
        assert_eq!(past.schema_verdict.as_ref().map(|v| v.stance()), Some(NewOnly));
        // Unreadable, stable did not support the last version: nobody moves.
        let held = past.with_schema(NewOnly, Neither, None, None);
        assert_eq!(held.schema_hold.as_ref().map(|h| (h.version.as_str(), h.percent)), Some(("f9", 50)));
        assert_eq!(held.schema_verdict.as_ref().map(|v| v.version.as_str()), Some("f9"));
        assert_eq!(held.route_served_before_restart(), Some(route(50, false, false)));
    }
}
