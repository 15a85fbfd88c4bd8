//! `[ramp]`: the steps, the hold at each, `min_requests` and `auto_start`,
//! checked by [`Plan::new`] with the error placed on the key it is about.

use super::raw::{RawRamp, S};
use super::{invalid, Invalid, Plan, RampConfig, MAX_DURATION};

pub(super) fn validate(raw: &S<RawRamp>) -> Result<RampConfig, Invalid> {
    let r = raw.get_ref();
    let mut hold = Vec::new();
    for text in r.hold.get_ref().to_vec() {
        let d = match humantime::parse_duration(text.trim()) {
            Ok(d) if d.is_zero() => return invalid(r.hold.span(), "ramp.hold: a hold must be longer than 0"),
            Ok(d) if d > MAX_DURATION => return invalid(r.hold.span(), "ramp.hold: at most 10 years"),
            Ok(d) => d,
            Err(e) => {
                return invalid(
                    r.hold.span(),
                    format!("ramp.hold: invalid duration {text:?}: {e} (write e.g. \"10m\", \"48h\")"),
                )
            }
        };
        hold.push(d);
    }
    let min_requests = r.min_requests.as_ref().map_or(0, |m| *m.get_ref());
    let plan = Plan::new(r.steps.get_ref().clone(), hold, min_requests).or_else(|e| {
        let span = if e.key == "hold" { r.hold.span() } else { r.steps.span() };
        invalid(span, format!("ramp.{e}"))
    })?;
    Ok(RampConfig { plan, auto_start: r.auto_start.as_ref().is_some_and(|a| *a.get_ref()) })
}
