//! The operator's per-policy settings, fetched from the host only when a rule asks.

use alloc::format;
use alloc::string::String;
use core::cell::OnceCell;

use serde::de::DeserializeOwned;

/// JSON settings for one policy on one endpoint. In a component they come from the
/// host's `settings` import the first time a rule reads them; in native tests from
/// [`Settings::from_json`]. The import is referenced only from [`Settings::text`], so a
/// policy that never reads its settings does not import it at all — which spares its
/// component the import shims, about a microsecond per evaluation.
pub struct Settings {
    text: OnceCell<String>,
}

impl core::fmt::Debug for Settings {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Settings")
            .field("text", &self.text.get())
            .finish()
    }
}

impl Settings {
    /// Settings read through the WIT `settings` import.
    pub fn from_host() -> Self {
        Self {
            text: OnceCell::new(),
        }
    }

    /// Settings given directly, for native tests.
    pub fn from_json(text: impl Into<String>) -> Self {
        Self {
            text: OnceCell::from(text.into()),
        }
    }

    /// No settings: `{}`.
    pub fn empty() -> Self {
        Self::from_json("{}")
    }

    /// The raw JSON text.
    pub fn text(&self) -> &str {
        self.text.get_or_init(crate::bindings::settings)
    }

    /// Deserialize the settings; empty text counts as `{}`. The error is a sentence a
    /// policy can put in a deny reason.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, String> {
        let text = self.text().trim();
        let text = if text.is_empty() { "{}" } else { text };
        serde_json::from_str(text).map_err(|e| format!("invalid settings: {e}"))
    }
}
