//! The route: what the request path reads of the run-time state, packed
//! into one `u32` so it is read with one atomic load.

/// What the request path needs to know, read with one atomic load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub percent: u8,
    /// L1 or L3 active: nobody goes to `new`, whatever the overrides say.
    pub rolled_back: bool,
    /// L2 active: new-feature entry points are shed.
    pub shedding: bool,
    /// The schema gate is closed: percent 0 and nobody on `new`, `force_new`
    /// included (not persisted: the gate task re-reads the database).
    pub gate_closed: bool,
}

impl Route {
    pub(super) fn pack(self) -> u32 {
        self.percent as u32
            | (self.rolled_back as u32) << 8
            | (self.shedding as u32) << 9
            | (self.gate_closed as u32) << 10
    }

    /// Nobody may go to `new`: an L1/L3 rollback or a closed schema gate.
    #[inline]
    pub fn new_refused(self) -> bool {
        self.rolled_back || self.gate_closed
    }

    pub(super) fn unpack(v: u32) -> Route {
        Route {
            percent: (v & 0xff) as u8,
            rolled_back: v & 1 << 8 != 0,
            shedding: v & 1 << 9 != 0,
            gate_closed: v & 1 << 10 != 0,
        }
    }
}
