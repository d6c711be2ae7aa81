//! Names QleetOS derives for the objects it creates, kept within Kubernetes' limits.

/// `<workload>-<runtime>-<hash>`: the hash of the pair keeps `a-b` on `c` and `a` on `b-c`
/// apart; the prefix is shortened when the name would exceed a DNS subdomain.
pub fn instance_name(workload: &str, runtime: &str) -> String {
    let hash = fnv1a(format!("{workload}/{runtime}").as_bytes()) as u32;
    cut_with_suffix(
        &format!("{workload}-{runtime}"),
        253,
        &format!("-{hash:08x}"),
    )
}

/// Eight hex digits identifying `text`, for names derived from several parts.
pub fn short_hash(text: &str) -> String {
    format!("{:08x}", fnv1a(text.as_bytes()) as u32)
}

/// `name` as a label value (at most 63 characters): long names are cut and end in a hash
/// of the whole name, so the value stays unique and selectable.
pub fn label_value(name: &str) -> String {
    cut_with_hash(name, 63)
}

/// `name` when it fits in `max` characters, else cut and ended by a hash of the whole name.
pub fn cut_with_hash(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_owned();
    }
    cut_with_suffix(name, max, &format!("-{:016x}", fnv1a(name.as_bytes())))
}

/// `name` cut so that it ends in `suffix` within `max` characters, without a separator
/// left dangling before the suffix.
fn cut_with_suffix(name: &str, max: usize, suffix: &str) -> String {
    let mut prefix: String = name.chars().take(max - suffix.len()).collect();
    while prefix.ends_with(['-', '.', '_']) {
        prefix.pop();
    }
    format!("{prefix}{suffix}")
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_instance_names_are_shortened_stably() {
        let long = "w".repeat(200);
        let name = instance_name(&long, &"r".repeat(100));
        assert_eq!(name.len(), 253);
        assert_eq!(name, instance_name(&long, &"r".repeat(100)));
        assert_ne!(name, instance_name(&long, &"s".repeat(100)));
        assert!(instance_name("web", "eu-1").starts_with("web-eu-1-"));
    }

    #[test]
    fn instance_names_of_different_pairs_never_collide() {
        assert_ne!(instance_name("a-b", "c"), instance_name("a", "b-c"));
    }

    #[test]
    fn label_values_fit_in_63_characters() {
        let long = "a".repeat(253);
        let value = label_value(&long);
        assert_eq!(value.len(), 63);
        assert_eq!(value, label_value(&long));
        assert_ne!(value, label_value(&"a".repeat(252)));
        assert_eq!(label_value("web"), "web");
    }
}
