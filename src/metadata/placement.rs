//! Partition placement: each new partition goes to the shard with the
//! fewest partitions, ties broken by the lowest shard index.

/// Chooses owners for `new_partitions` partitions given how many each shard
/// owns now. Returns shard indexes in partition order.
pub fn place(counts: &[usize], new_partitions: usize) -> Vec<u16> {
    assert!(!counts.is_empty(), "placement needs at least one shard");
    let mut counts = counts.to_vec();
    let mut owners = Vec::with_capacity(new_partitions);
    for _ in 0..new_partitions {
        let (index, _) = counts
            .iter()
            .enumerate()
            .min_by_key(|(index, count)| (**count, *index))
            .unwrap_or((0, &0));
        counts[index] += 1;
        owners.push(u16::try_from(index).unwrap_or(u16::MAX));
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::place;

    #[test]
    fn placement_table() {
        let cases: &[(&[usize], usize, &[u16])] = &[
            (&[0, 0], 4, &[0, 1, 0, 1]),
            (&[2, 0], 3, &[1, 1, 0]),
            (&[0], 3, &[0, 0, 0]),
            (&[1, 1, 0], 1, &[2]),
            (&[5, 3, 3], 2, &[1, 2]),
        ];
        for (counts, n, expected) in cases {
            assert_eq!(place(counts, *n), expected.to_vec(), "counts {counts:?}");
        }
    }
}
