//! Which network addresses our outbound connections may reach.

use std::net::IpAddr;

/// Addresses our outbound connections (webhooks outside the local profile, the relay to MX hosts
/// found in DNS) may never reach: loopback, private,
/// link-local (cloud metadata), unique-local, CGNAT, unspecified, multicast, documentation,
/// benchmarking, IETF protocol assignments, reserved (240/4), and IPv6 forms that carry an
/// IPv4 address (mapped, compatible, NAT64 64:ff9b::/96, 6to4 2002::/16), judged by the
/// address they carry.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || o[0] >= 240
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                // The deprecated 6to4 relay anycast (RFC 7526).
                || (o[0] == 192 && o[1] == 88 && o[2] == 99)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let carried = |hi: u16, lo: u16| {
                IpAddr::V4(std::net::Ipv4Addr::new(
                    (hi >> 8) as u8,
                    hi as u8,
                    (lo >> 8) as u8,
                    lo as u8,
                ))
            };
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            // ::a.b.c.d (deprecated IPv4-compatible), but not :: and ::1.
            if s[..6] == [0; 6] && !(v6.is_loopback() || v6.is_unspecified()) {
                return is_internal(carried(s[6], s[7]));
            }
            // NAT64 well-known prefix: the gateway would reach the carried address.
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_internal(carried(s[6], s[7]));
            }
            // 6to4: the relay would reach the carried address.
            if s[0] == 0x2002 && is_internal(carried(s[1], s[2])) {
                return true;
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || s[0] == 0x2001 && s[1] == 0x0db8
                // NAT64 local-use prefix 64:ff9b:1::/48.
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1)
                // Deprecated site-local fec0::/10, discard-only 100::/64, benchmarking
                // 2001:2::/48.
                || (s[0] & 0xffc0) == 0xfec0
                || s[..4] == [0x100, 0, 0, 0]
                || (s[0] == 0x2001 && s[1] == 2 && s[2] == 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::127.0.0.1",
            "64:ff9b:1::1",
            "2002:a9fe:a9fe::1",
            "2002:7f00:1::",
            "192.0.0.170",
            "240.0.0.1",
            "255.255.255.255",
            "192.88.99.1",
            "192.0.2.1",
            "198.18.0.1",
            "224.0.0.1",
            "::",
            "ff02::1",
            "fec0::1",
            "100::1",
            "2001:2::1",
            "2001:db8::1",
        ] {
            assert!(is_internal(a.parse().unwrap()), "{a}");
        }
        for a in [
            "93.184.216.34",
            "2606:2800:220:1::1",
            "64:ff9b::93.184.216.34",
            "2002:5db8:d822::1",
            "62.149.128.4",
            "2a00:1450:4002::1b",
            "::ffff:62.149.128.4",
        ] {
            assert!(!is_internal(a.parse().unwrap()), "{a}");
        }
    }
}
