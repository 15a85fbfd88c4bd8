//! `[flags]`: who may ask the flags API (docs/src/flags-ofrep.md) which side
//! a user is on. One token a line, from `tokens_file` or the environment
//! variable `tokens_env`, read at every load like every other secret and
//! never printed.

use super::raw::{RawFlags, S};
use super::{invalid, secret, FlagTokens, FlagsConfig, Invalid};

pub(super) fn validate(raw: &S<RawFlags>) -> Result<FlagsConfig, Invalid> {
    let f = raw.get_ref();
    if f.tokens_file.is_some() && f.tokens_env.is_some() {
        return invalid(raw.span(), "give only one of `tokens_file` or `tokens_env`");
    }
    let Some(text) = secret::one_of("tokens", None, f.tokens_env.as_ref(), f.tokens_file.as_ref(), raw.span())? else {
        return invalid(
            raw.span(),
            "[flags] needs `tokens_file = \"PATH\"` or `tokens_env = \"NAME\"` (one token a line)",
        );
    };
    let tokens: Vec<String> =
        text.value.get_ref().lines().map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect();
    Ok(FlagsConfig { tokens: FlagTokens(tokens) })
}
