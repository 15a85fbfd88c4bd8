//! The schema's say in the route, as one pure decision: grayshift never
//! moves users onto a side that does not support the current schema (see
//! README, "Schema gate").

use serde::{Deserialize, Serialize};

use super::{Route, State};
use crate::migration::Stance;

/// The split held while no side supports the schema: the route the proxy
/// used when the version left both lists, and that version. Persisted with
/// the state, so a restart holds the same split.
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
    ///   replica that has no state file yet), the desired percent is the
    ///   split, never 0 because the gate would be closed.
    pub(crate) fn route_for(&self, schema: Stance) -> Route {
        match schema {
            Stance::Both => self.route_under(false),
            Stance::NewOnly => self.route_under(true),
            Stance::Unread | Stance::StableOnly => Route { percent: 0, gate_closed: true, ..self.route_under(false) },
            Stance::Neither => {
                let held = self.schema_hold.as_ref().map_or_else(|| self.route_under(true), Hold::route);
                let forced = self.route_under(true);
                if forced.rolled_back {
                    Route { percent: 0, rolled_back: true, ..held }
                } else {
                    held
                }
            }
        }
    }

    /// The state after the schema's stance went from `before` to `now` at
    /// `version`, while the proxy used `shown`: entering `Neither` holds
    /// `shown` (unless something is held already, or nothing was read yet:
    /// the fail-safe closed gate of a start is no split to keep); leaving it
    /// lets the hold go.
    pub(crate) fn with_schema(&self, before: Stance, now: Stance, shown: Route, version: &str) -> State {
        let schema_hold = match now {
            Stance::Neither if self.schema_hold.is_some() => self.schema_hold.clone(),
            Stance::Neither if before == Stance::Unread => None,
            Stance::Neither => Some(Hold {
                version: version.to_string(),
                percent: shown.percent,
                rolled_back: shown.rolled_back,
                shedding: shown.shedding,
                gate_closed: shown.gate_closed,
            }),
            _ => None,
        };
        State { schema_hold, ..self.clone() }
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
        s.with_schema(Stance::Both, Stance::Neither, r, "c3")
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
            // Nothing held (a replica with no state file): the desired split.
            (state(30, None), Neither, route(30, false, false)),
            (state(30, Some(false)), Neither, route(30, false, false)),
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
        let h = s.with_schema(Both, Neither, at50, "c3");
        assert_eq!(h.schema_hold.as_ref().map(|h| (h.percent, h.version.as_str())), Some((50, "c3")));
        let closed = s.with_schema(StableOnly, Neither, route(0, false, true), "hotfix");
        assert_eq!(closed.route_for(Neither), route(0, false, true), "closed gate stays closed");
        // Already held (a restart, or an unreadable version in between): kept.
        let again = h.with_schema(StableOnly, Neither, route(0, false, true), "d4");
        assert_eq!(again.schema_hold, h.schema_hold);
        // The start's fail-safe closed gate is not a split to keep.
        assert_eq!(s.with_schema(Unread, Neither, route(0, false, true), "c3").schema_hold, None);
        for back in [Both, StableOnly, NewOnly] {
            assert_eq!(h.with_schema(Neither, back, at50, "b2").schema_hold, None, "{back:?}");
        }
    }
}
