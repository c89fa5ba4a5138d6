//! `IP` / `IP6`: detect, use a given address, or disable the family.

use std::net::IpAddr;

use crate::Family;
use crate::error::SettingError;

const IP_FORMS: &str = "empty or \"autodetect\" (detect), \"a.b.c.d\" or \"a.b.c.d/len\" \
(use as given), \"none\" (no IPv4)";
const IP6_FORMS: &str = "empty or \"none\" (no IPv6), \"autodetect\" (detect), \"addr\" or \
\"addr/len\" (use as given)";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressSetting {
    /// Run the autodetection method.
    Detect,
    /// This family is not used.
    Disabled,
    /// The address the user wrote; the prefix length comes from the interface holding it
    /// when omitted.
    Given {
        text: String,
        address: IpAddr,
        prefix_len: Option<u8>,
    },
}

impl AddressSetting {
    /// Parses `IP` (`family` = V4) or `IP6` (V6). As in Calico, an empty `IP` means detect
    /// while an empty `IP6` means no IPv6: IPv6 detection happens only when asked for.
    pub fn parse(text: &str, family: Family) -> Result<AddressSetting, SettingError> {
        let fail = |problem: String| SettingError {
            variable: family.address_variable(),
            input: text.to_string(),
            problem,
            forms: match family {
                Family::V4 => IP_FORMS,
                Family::V6 => IP6_FORMS,
            },
        };
        let trimmed = text.trim();
        match trimmed {
            "" => {
                return Ok(match family {
                    Family::V4 => AddressSetting::Detect,
                    Family::V6 => AddressSetting::Disabled,
                });
            }
            "autodetect" => return Ok(AddressSetting::Detect),
            "none" => return Ok(AddressSetting::Disabled),
            _ => {}
        }
        let (address_text, prefix_text) = match trimmed.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (trimmed, None),
        };
        let address: IpAddr = address_text
            .parse()
            .map_err(|_| fail(format!("\"{address_text}\" is not an IP address")))?;
        if Family::of(address) != family {
            return Err(fail(format!(
                "{address} is an {} address, but {} holds the {family} one",
                Family::of(address),
                family.address_variable()
            )));
        }
        let prefix_len = match prefix_text {
            None => None,
            Some(prefix) => {
                let len: u8 = prefix
                    .parse()
                    .ok()
                    .filter(|len| *len <= family.max_prefix_len())
                    .ok_or_else(|| {
                        fail(format!(
                            "prefix length \"/{prefix}\" is not a number from 0 to {}",
                            family.max_prefix_len()
                        ))
                    })?;
                Some(len)
            }
        };
        Ok(AddressSetting::Given {
            text: trimmed.to_string(),
            address,
            prefix_len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_means_detect_for_ip_and_none_for_ip6() {
        assert_eq!(
            AddressSetting::parse("", Family::V4).unwrap(),
            AddressSetting::Detect
        );
        assert_eq!(
            AddressSetting::parse("", Family::V6).unwrap(),
            AddressSetting::Disabled
        );
        assert_eq!(
            AddressSetting::parse("autodetect", Family::V6).unwrap(),
            AddressSetting::Detect
        );
        assert_eq!(
            AddressSetting::parse("none", Family::V4).unwrap(),
            AddressSetting::Disabled
        );
    }

    #[test]
    fn given_addresses_keep_an_optional_prefix() {
        assert_eq!(
            AddressSetting::parse("198.51.100.10", Family::V4).unwrap(),
            AddressSetting::Given {
                text: "198.51.100.10".into(),
                address: "198.51.100.10".parse().unwrap(),
                prefix_len: None
            }
        );
        assert_eq!(
            AddressSetting::parse("2001:db8::5/64", Family::V6).unwrap(),
            AddressSetting::Given {
                text: "2001:db8::5/64".into(),
                address: "2001:db8::5".parse().unwrap(),
                prefix_len: Some(64)
            }
        );
    }

    #[test]
    fn bad_settings_are_named() {
        let error = AddressSetting::parse("198.51.100.300", Family::V4).unwrap_err();
        assert_eq!(error.problem, "\"198.51.100.300\" is not an IP address");
        assert!(error.to_string().starts_with("IP=\"198.51.100.300\": "));
        assert!(error.to_string().contains("valid forms:"));

        let error = AddressSetting::parse("198.51.100.3/33", Family::V4).unwrap_err();
        assert_eq!(
            error.problem,
            "prefix length \"/33\" is not a number from 0 to 32"
        );

        let error = AddressSetting::parse("2001:db8::1", Family::V4).unwrap_err();
        assert_eq!(
            error.problem,
            "2001:db8::1 is an IPv6 address, but IP holds the IPv4 one"
        );
        let error = AddressSetting::parse("detect", Family::V6).unwrap_err();
        assert!(error.to_string().starts_with("IP6=\"detect\": "), "{error}");
    }
}
