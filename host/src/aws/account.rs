//! Which account a call targets, from the access key id that signed it.

use std::collections::HashMap;

/// A 12-digit AWS account id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(String);

impl AccountId {
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| Self(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for AccountId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The account an access key id names, if it names one:
/// - the placeholder scheme: `AKIA` + a 12-digit account + 4 characters
///   (`AKIA035475582903XXXX`), checked first because some such ids also decode;
/// - a new-generation `AKIA`/`ASIA` key id, which decodes offline to its account
///   (base32 of the 16 characters after the prefix; bits 7..47 of the first 6 bytes).
///   Old-generation ids (`AKIAIOSFODNN7EXAMPLE`) carry no account and yield `None`.
pub fn account_of_key(key_id: &str) -> Option<AccountId> {
    let (prefix, rest) = key_id.split_at_checked(4)?;
    if !matches!(prefix, "AKIA" | "ASIA") || rest.len() != 16 {
        return None;
    }
    if let Some(account) = rest.get(..12).and_then(AccountId::parse) {
        return Some(account);
    }
    let decoded = data_encoding::BASE32_NOPAD.decode(rest.as_bytes()).ok()?;
    // New-generation ids set the top bit of the first decoded byte.
    if decoded.first()? & 0x80 == 0 {
        return None;
    }
    let z = decoded[..6]
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    AccountId::parse(&format!("{:012}", (z & 0x7fff_ffff_ff80) >> 7))
}

/// The operator's account labels: `111111111111=prod`.
#[derive(Debug, Clone, Default)]
pub struct AccountNames(HashMap<AccountId, String>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("account label {0:?} is not ACCOUNT=NAME with a 12-digit account id")]
pub struct AccountNameError(String);

impl AccountNames {
    pub fn parse<'a>(labels: impl IntoIterator<Item = &'a str>) -> Result<Self, AccountNameError> {
        let mut names = HashMap::new();
        for label in labels {
            let (id, name) = label
                .split_once('=')
                .ok_or_else(|| AccountNameError(label.to_string()))?;
            let id =
                AccountId::parse(id.trim()).ok_or_else(|| AccountNameError(label.to_string()))?;
            let name = name.trim();
            if name.is_empty() {
                return Err(AccountNameError(label.to_string()));
            }
            names.insert(id, name.to_string());
        }
        Ok(Self(names))
    }

    pub fn name(&self, account: &AccountId) -> Option<&str> {
        self.0.get(account).map(String::as_str)
    }

    /// The account the operator calls `name`.
    pub fn id_of(&self, name: &str) -> Option<AccountId> {
        self.0
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(id, _)| id.clone())
    }

    /// `name=id` for each labelled account.
    pub fn labels(&self) -> impl Iterator<Item = String> + '_ {
        self.0.iter().map(|(id, name)| format!("{name}={id}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_and_real_key_ids() {
        let cases = [
            ("AKIA035475582903XXXX", Some("035475582903")),
            ("AKIA111111111111XXXX", Some("111111111111")),
            // Also decodable as base32: the placeholder reading wins.
            ("AKIA222222222222XXXX", Some("222222222222")),
            ("ASIAY34FZKBOKMUTVV7A", Some("609629065308")),
            ("AKIAIOSFODNN7EXAMPLE", None),
            ("AKIA", None),
            ("", None),
            ("XKIA035475582903XXXX", None),
            ("AKIA0354755829", None),
            ("AKIA!!!!!!!!!!!!!!!!", None),
            ("AKIAé", None),
        ];
        for (key, want) in cases {
            assert_eq!(
                account_of_key(key).as_ref().map(AccountId::as_str),
                want,
                "{key}"
            );
        }
    }

    #[test]
    fn account_labels() {
        let names =
            AccountNames::parse(["111111111111=prod", "222222222222 = staging"]).expect("labels");
        assert_eq!(
            names.name(&AccountId::parse("111111111111").expect("id")),
            Some("prod")
        );
        assert_eq!(
            names.name(&AccountId::parse("222222222222").expect("id")),
            Some("staging")
        );
        for bad in ["prod", "1111=prod", "111111111111=", "x11111111111=prod"] {
            assert!(AccountNames::parse([bad]).is_err(), "{bad}");
        }
    }
}
