//! OPEN capabilities (RFC 5492) and the two-field address family they and MP-BGP name.

use super::consts::{afi, capability_code, safi};
use super::error::{EncodeError, OpenError};

/// An address family as BGP names it: AFI and SAFI (RFC 4760 - Section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Family {
    pub afi: u16,
    pub safi: u8,
}

impl Family {
    pub const IPV4_UNICAST: Family = Family {
        afi: afi::IPV4,
        safi: safi::UNICAST,
    };
    pub const IPV6_UNICAST: Family = Family {
        afi: afi::IPV6,
        safi: safi::UNICAST,
    };
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Family::IPV4_UNICAST => f.write_str("ipv4-unicast"),
            Family::IPV6_UNICAST => f.write_str("ipv6-unicast"),
            Family { afi, safi } => write!(f, "afi {afi} safi {safi}"),
        }
    }
}

/// One family in a graceful restart capability (RFC 4724 - Section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GracefulRestartFamily {
    pub family: Family,
    /// "Forwarding State" (F) bit: forwarding for this family survived the restart.
    pub forwarding_preserved: bool,
}

/// RFC 4724 - Section 3: the graceful restart capability.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GracefulRestart {
    /// "Restart State" (R) bit: the sender has just restarted.
    pub restart_state: bool,
    /// RFC 8538 - Section 2 "N" bit: graceful restart also covers NOTIFICATIONs.
    pub notification: bool,
    /// Seconds the peer should keep our routes while we come back (12 bits).
    pub restart_time: u16,
    pub families: Vec<GracefulRestartFamily>,
}

/// The restart time field is 12 bits wide (RFC 4724 - Section 3).
pub const MAX_RESTART_TIME: u16 = 0x0FFF;

const RESTART_STATE_BIT: u8 = 0x80;
const NOTIFICATION_BIT: u8 = 0x40;
const FORWARDING_STATE_BIT: u8 = 0x80;

/// A capability advertised in an OPEN.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Capability {
    /// RFC 4760 - Section 8.
    Multiprotocol(Family),
    /// RFC 2918 - Section 2.
    RouteRefresh,
    /// RFC 4724 - Section 3.
    GracefulRestart(GracefulRestart),
    /// RFC 6793 - Section 3: the speaker's 4-octet AS number.
    FourOctetAs(u32),
    /// Anything else, kept as received. RFC 5492 - Section 3: "a BGP speaker ... SHOULD
    /// ignore" capabilities it does not recognize.
    Unknown { code: u8, value: Vec<u8> },
}

impl Capability {
    pub fn code(&self) -> u8 {
        match self {
            Capability::Multiprotocol(_) => capability_code::MULTIPROTOCOL,
            Capability::RouteRefresh => capability_code::ROUTE_REFRESH,
            Capability::GracefulRestart(_) => capability_code::GRACEFUL_RESTART,
            Capability::FourOctetAs(_) => capability_code::FOUR_OCTET_AS,
            Capability::Unknown { code, .. } => *code,
        }
    }

    /// Decodes one capability from its code and value.
    pub fn decode(code: u8, value: &[u8]) -> Result<Capability, OpenError> {
        let length_error = || OpenError::CapabilityLength {
            code,
            length: value.len(),
        };
        match code {
            capability_code::MULTIPROTOCOL => match *value {
                // RFC 4760 - Section 8: AFI, a reserved octet, SAFI.
                [a0, a1, _reserved, safi] => Ok(Capability::Multiprotocol(Family {
                    afi: u16::from_be_bytes([a0, a1]),
                    safi,
                })),
                _ => Err(length_error()),
            },
            capability_code::ROUTE_REFRESH => {
                if value.is_empty() {
                    Ok(Capability::RouteRefresh)
                } else {
                    Err(length_error())
                }
            }
            capability_code::FOUR_OCTET_AS => match *value {
                [a, b, c, d] => Ok(Capability::FourOctetAs(u32::from_be_bytes([a, b, c, d]))),
                _ => Err(length_error()),
            },
            capability_code::GRACEFUL_RESTART => {
                // RFC 4724 - Section 3: two octets of flags and time, then 4-octet tuples.
                if value.len() < 2 || !(value.len() - 2).is_multiple_of(4) {
                    return Err(length_error());
                }
                let flags = value[0];
                let restart_time = u16::from_be_bytes([value[0], value[1]]) & MAX_RESTART_TIME;
                let families = value[2..]
                    .chunks_exact(4)
                    .map(|tuple| GracefulRestartFamily {
                        family: Family {
                            afi: u16::from_be_bytes([tuple[0], tuple[1]]),
                            safi: tuple[2],
                        },
                        forwarding_preserved: tuple[3] & FORWARDING_STATE_BIT != 0,
                    })
                    .collect();
                Ok(Capability::GracefulRestart(GracefulRestart {
                    restart_state: flags & RESTART_STATE_BIT != 0,
                    notification: flags & NOTIFICATION_BIT != 0,
                    restart_time,
                    families,
                }))
            }
            _ => Ok(Capability::Unknown {
                code,
                value: value.to_vec(),
            }),
        }
    }

    /// Appends code, length and value.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        out.push(self.code());
        out.push(0);
        match self {
            Capability::Multiprotocol(family) => {
                out.extend_from_slice(&family.afi.to_be_bytes());
                out.push(0);
                out.push(family.safi);
            }
            Capability::RouteRefresh => {}
            Capability::FourOctetAs(asn) => out.extend_from_slice(&asn.to_be_bytes()),
            Capability::GracefulRestart(gr) => {
                let mut head = gr.restart_time.min(MAX_RESTART_TIME);
                if gr.restart_state {
                    head |= u16::from(RESTART_STATE_BIT) << 8;
                }
                if gr.notification {
                    head |= u16::from(NOTIFICATION_BIT) << 8;
                }
                out.extend_from_slice(&head.to_be_bytes());
                for tuple in &gr.families {
                    out.extend_from_slice(&tuple.family.afi.to_be_bytes());
                    out.push(tuple.family.safi);
                    out.push(if tuple.forwarding_preserved {
                        FORWARDING_STATE_BIT
                    } else {
                        0
                    });
                }
            }
            Capability::Unknown { value, .. } => out.extend_from_slice(value),
        }
        let length = out.len() - start - 2;
        let Ok(length_octet) = u8::try_from(length) else {
            out.truncate(start);
            return Err(EncodeError::CapabilityTooLong {
                code: self.code(),
                length,
            });
        };
        out[start + 1] = length_octet;
        Ok(())
    }
}

/// Decodes the capabilities in one Capabilities optional parameter (RFC 5492 - Section 4:
/// one parameter may carry several).
pub fn decode_capabilities(mut value: &[u8], into: &mut Vec<Capability>) -> Result<(), OpenError> {
    while let [code, length, rest @ ..] = value {
        let length = usize::from(*length);
        if rest.len() < length {
            return Err(OpenError::CapabilityOverrun { code: *code });
        }
        into.push(Capability::decode(*code, &rest[..length])?);
        value = &rest[length..];
    }
    match value {
        [] => Ok(()),
        [code, ..] => Err(OpenError::CapabilityOverrun { code: *code }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graceful_restart_bits_and_time_come_from_their_fields() {
        // R set, N clear, time 0x0ABC; IPv4 unicast with F set, IPv6 unicast without.
        let value = [0x8A, 0xBC, 0, 1, 1, 0x80, 0, 2, 1, 0];
        let decoded = Capability::decode(capability_code::GRACEFUL_RESTART, &value);
        let expected = Capability::GracefulRestart(GracefulRestart {
            restart_state: true,
            notification: false,
            restart_time: 0x0ABC,
            families: vec![
                GracefulRestartFamily {
                    family: Family::IPV4_UNICAST,
                    forwarding_preserved: true,
                },
                GracefulRestartFamily {
                    family: Family::IPV6_UNICAST,
                    forwarding_preserved: false,
                },
            ],
        });
        assert_eq!(decoded, Ok(expected.clone()));
        let mut out = Vec::new();
        expected.encode(&mut out).expect("fits");
        assert_eq!(out[2..], value);
    }

    #[test]
    fn fixed_length_capabilities_reject_other_lengths() {
        for (code, value) in [
            (capability_code::MULTIPROTOCOL, &[0, 1, 0][..]),
            (capability_code::ROUTE_REFRESH, &[0][..]),
            (capability_code::FOUR_OCTET_AS, &[0, 0, 1][..]),
            (capability_code::GRACEFUL_RESTART, &[0, 0, 0, 1, 1][..]),
        ] {
            assert_eq!(
                Capability::decode(code, value),
                Err(OpenError::CapabilityLength {
                    code,
                    length: value.len()
                })
            );
        }
    }

    #[test]
    fn a_capability_that_overruns_its_parameter_is_an_error() {
        let mut capabilities = Vec::new();
        let error = decode_capabilities(&[65, 4, 0, 0], &mut capabilities);
        assert_eq!(error, Err(OpenError::CapabilityOverrun { code: 65 }));
        let error = decode_capabilities(&[2, 0, 65], &mut capabilities);
        assert_eq!(error, Err(OpenError::CapabilityOverrun { code: 65 }));
    }

    #[test]
    fn unknown_capabilities_are_kept_as_received() {
        let mut capabilities = Vec::new();
        decode_capabilities(&[70, 2, 9, 8, 2, 0], &mut capabilities).expect("well formed");
        assert_eq!(
            capabilities,
            vec![
                Capability::Unknown {
                    code: 70,
                    value: vec![9, 8]
                },
                Capability::RouteRefresh
            ]
        );
    }
}
