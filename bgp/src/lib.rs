//! tortie's BGP speaker. So far: [`packet`], the wire codec (RFC 4271 messages, RFC 4760
//! multiprotocol reachability, RFC 6793 4-octet AS numbers, RFC 2918 route refresh, RFC
//! 4724 graceful restart, RFC 7606 error handling).

pub mod packet;
