//! What the diffusers model configs share (`UNet2DModel`, `AutoencoderKL`): strict parsing of a
//! `config.json` (an unknown key or a value that does not parse is an error naming it) and the
//! bounds every count is checked against, since a config is user input.

use crate::error::{Error, Result};
use serde_json::Value;

/// Bounds on the counts of a diffusers config: it is user input, and these size the block
/// plans (and the 2^(levels - 1) size factor) before anything is allocated from them.
pub(crate) const MAX_CHANNELS: usize = 1 << 16;
pub(crate) const MAX_LAYERS_PER_BLOCK: usize = 64;
const MAX_LEVELS: usize = 16;

/// The level structure the UNet and the VAE share: at least one level, every width in
/// 1..=MAX_CHANNELS, and one down and one up block per level.
pub(crate) fn check_levels(ch: &[usize], down_blocks: usize, up_blocks: usize) -> Result<()> {
    if ch.is_empty() || ch.contains(&0) {
        return Err(Error::config(
            "block_out_channels",
            format!("{ch:?}: needs at least one level, every entry >= 1"),
        ));
    }
    check_counts(&[
        ("block_out_channels", ch.len(), MAX_LEVELS),
        (
            "block_out_channels",
            ch.iter().copied().max().unwrap_or(1),
            MAX_CHANNELS,
        ),
    ])?;
    for (name, len) in [
        ("down_block_types", down_blocks),
        ("up_block_types", up_blocks),
    ] {
        if len != ch.len() {
            return Err(Error::config(
                name,
                format!("{len} blocks for {} block_out_channels", ch.len()),
            ));
        }
    }
    Ok(())
}

/// Every `(name, value, max)` has 1 <= value <= max; the error names the key.
pub(crate) fn check_counts(counts: &[(&'static str, usize, usize)]) -> Result<()> {
    for &(name, v, max) in counts {
        if v == 0 {
            return Err(Error::config(name, "must be >= 1"));
        }
        if v > max {
            return Err(Error::config(name, format!("{v} is above the limit {max}")));
        }
    }
    Ok(())
}

/// A `config.json` text as JSON (`context` names the config in the error).
pub(crate) fn parse_json_text(text: &str, context: &'static str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| Error::config(context, format!("not JSON: {e}")))
}

/// A diffusers config of type `T` (`#[serde(default)]`, keys `keys`) from a JSON object,
/// strictly: an unknown key (other than `_`-prefixed bookkeeping) is an error naming it, and so
/// is a value that does not parse (the first key whose value alone fails is named). `context`
/// names the config and `what` the model in errors.
pub(crate) fn parse_strict<T: serde::de::DeserializeOwned>(
    value: &Value,
    context: &'static str,
    what: &str,
    keys: &[&'static str],
) -> Result<T> {
    let obj = value
        .as_object()
        .ok_or_else(|| Error::config(context, "is not a JSON object"))?;
    let mut known = serde_json::Map::new();
    for (k, v) in obj {
        if keys.contains(&k.as_str()) {
            known.insert(k.clone(), v.clone());
        } else if !k.starts_with('_') {
            return Err(Error::config(
                context,
                format!("unknown option `{k}` (= {v}): not implemented by {what}"),
            ));
        }
    }
    match serde_json::from_value(Value::Object(known.clone())) {
        Ok(c) => Ok(c),
        Err(e) => {
            // The key whose value alone fails to parse, as an error naming it.
            let culprit = known.iter().find_map(|(k, v)| {
                let single = Value::Object([(k.clone(), v.clone())].into_iter().collect());
                let err = serde_json::from_value::<T>(single).err()?;
                let name = keys.iter().find(|key| **key == k.as_str())?;
                Some(Error::config(
                    name,
                    format!("{v} is not a value {what} implements ({err})"),
                ))
            });
            Err(culprit.unwrap_or_else(|| Error::config(context, e.to_string())))
        }
    }
}
