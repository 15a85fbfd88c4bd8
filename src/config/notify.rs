//! `[[notify]]`: the webhook (or `webhook_env`, `webhook_file`), its
//! timeout and CA, and the message format (`json` or `slack`).

use super::raw::RawNotify;
use super::{ca_file, http_url, invalid, positive_duration, secret, Invalid, NotifyConfig, NotifyFormat};

pub(super) fn validate(n: &RawNotify) -> Result<NotifyConfig, Invalid> {
    let webhook = secret::one_of("webhook", n.webhook.as_ref(), n.webhook_env.as_ref(), n.webhook_file.as_ref(), 0..0)?
        .map_or_else(|| invalid(0..0, "[[notify]] needs `webhook` (or `webhook_env`, `webhook_file`)"), Ok)?;
    let (webhook, timeout, ca) = (webhook.check(http_url)?, positive_duration(&n.timeout, "5s")?, ca_file(&n.ca)?);
    let format = match n.format.as_ref().map(|f| (f.get_ref().as_str(), f.span())) {
        None | Some(("json", _)) => NotifyFormat::Json,
        Some(("slack", _)) => NotifyFormat::Slack,
        Some((other, span)) => return invalid(span, format!("notify.format {other:?} must be \"json\" or \"slack\"")),
    };
    Ok(NotifyConfig { webhook, timeout, ca, format })
}
