//! Shared-prefix ("cascade") attention planning: which decode rows of a paged step read the same
//! cached blocks first, so that attention reads those blocks once for all of them.
//!
//! The `n` samples of one request share their prompt's full blocks (and requests that start alike
//! share prefix-cache blocks), so at pass@32 most of a step's KV reads are of a few prompts read
//! 32 times over. A group here is a set of decode rows whose block tables start with the same
//! blocks; the CUDA path computes attention over that common prefix once per group, with all the
//! group's queries in one tile (`attn_cascade` in paged.cu), and each row's own suffix as before,
//! merging the two by their softmax statistics. This module only decides the groups; it is plain
//! data and runs (and is tested) anywhere.

/// Decode rows that share their first `shared` positions (whole blocks, the same block ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Indices of the rows in the step's decode rows, in ascending order.
    pub rows: Vec<usize>,
    /// Positions every row of the group reads from the same blocks.
    pub shared: usize,
}

/// One decode row as the planner sees it: its block table and the positions already cached
/// (the row's new token goes to position `context`).
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub blocks: &'a [u32],
    pub context: usize,
}

/// Groups of at least two rows sharing at least `min_shared` positions, chosen to save the most
/// block reads (each group reads its prefix once instead of once per row).
///
/// Only full blocks before a row's new token count: the block the token goes to is the row's own
/// (copy-on-write), so a shared block is never written by the step that reads it. Rows are sorted
/// by block table, so rows sharing a prefix are neighbours and a group's shared prefix is the
/// smallest common prefix of neighbours in it; the split into groups is the exact optimum over
/// that order (a small dynamic program: a step has at most a few hundred decode rows).
pub fn groups(rows: &[Row], block_size: usize, min_shared: usize) -> Vec<Group> {
    let bs = block_size.max(1);
    fn full<'a>(r: &Row<'a>, bs: usize) -> &'a [u32] {
        &r.blocks[..(r.context / bs).min(r.blocks.len())]
    }
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| full(&rows[a], bs).cmp(full(&rows[b], bs)).then(a.cmp(&b)));
    let n = order.len();
    if n < 2 {
        return Vec::new();
    }
    // lcp[i]: blocks rows order[i - 1] and order[i] have in common (lcp[0] unused).
    let lcp: Vec<usize> = (0..n)
        .map(|i| {
            if i == 0 {
                return 0;
            }
            let (a, b) = (full(&rows[order[i - 1]], bs), full(&rows[order[i]], bs));
            a.iter().zip(b).take_while(|(x, y)| x == y).count()
        })
        .collect();
    let min_blocks = min_shared.div_ceil(bs).max(1);
    // best[j]: the most block reads saved by rows order[..j]; cut[j]: where its last group starts.
    let mut best = vec![0usize; n + 1];
    let mut cut = vec![0usize; n + 1];
    for j in 1..=n {
        // Row order[j - 1] alone.
        best[j] = best[j - 1];
        cut[j] = j - 1;
        // Or the group order[i..j]: it shares min(lcp[i + 1..j]) blocks and saves that many per
        // row after its first.
        let mut shared = usize::MAX;
        for i in (0..j - 1).rev() {
            shared = shared.min(lcp[i + 1]);
            if shared < min_blocks {
                break;
            }
            let saved = best[i] + (j - 1 - i) * shared;
            if saved > best[j] {
                best[j] = saved;
                cut[j] = i;
            }
        }
    }
    let mut out = Vec::new();
    let mut j = n;
    while j > 0 {
        let i = cut[j];
        if j - i >= 2 {
            let shared = (i + 1..j).map(|k| lcp[k]).min().unwrap_or(0);
            let mut members: Vec<usize> = order[i..j].to_vec();
            members.sort_unstable();
            out.push(Group { rows: members, shared: shared * bs });
        }
        j = i;
    }
    out.reverse();
    out
}

/// Cached positions the groups spare the step from reading (each group's prefix is read once
/// rather than once per row).
pub fn saved_positions(groups: &[Group]) -> usize {
    groups.iter().map(|g| (g.rows.len() - 1) * g.shared).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(blocks: &[u32], context: usize) -> Row<'_> {
        Row { blocks, context }
    }

    #[test]
    fn the_samples_of_one_request_share_their_prompts_full_blocks() {
        // A 40-position prompt in blocks 0, 1 (full) and its own partial third block per sample.
        let (a, b, c) = ([0, 1, 7], [0, 1, 8], [0, 1, 9]);
        let rows = [row(&a, 41), row(&b, 45), row(&c, 40)];
        assert_eq!(groups(&rows, 16, 16), vec![Group { rows: vec![0, 1, 2], shared: 32 }]);
    }

    #[test]
    fn a_block_the_row_writes_this_step_is_never_shared() {
        // Position 32 (the new token) lies in block 2, which the rows list alike: only blocks
        // 0 and 1 are read-only this step.
        let (a, b) = ([0, 1, 2], [0, 1, 2]);
        let rows = [row(&a, 32), row(&b, 32)];
        assert_eq!(groups(&rows, 16, 16)[0].shared, 32);
    }

    #[test]
    fn rows_with_nothing_in_common_form_no_group() {
        let (a, b) = ([0, 1, 2], [3, 4, 5]);
        assert!(groups(&[row(&a, 40), row(&b, 40)], 16, 16).is_empty());
    }

    #[test]
    fn a_prefix_shorter_than_the_minimum_is_not_worth_a_group() {
        let (a, b) = ([0, 1, 2], [0, 4, 5]);
        assert!(groups(&[row(&a, 40), row(&b, 40)], 16, 32).is_empty());
        assert_eq!(groups(&[row(&a, 40), row(&b, 40)], 16, 16).len(), 1);
    }

    #[test]
    fn two_requests_behind_a_common_header_keep_their_own_long_prefixes() {
        // Both requests start with header block 0; each request's samples share 4 more blocks.
        // Grouping all rows by the header alone would save 1 block per row; two groups by
        // request save 5 per row after each group's first.
        let t: Vec<[u32; 6]> = vec![
            [0, 1, 2, 3, 4, 20],
            [0, 1, 2, 3, 4, 21],
            [0, 1, 2, 3, 4, 22],
            [0, 5, 6, 7, 8, 23],
            [0, 5, 6, 7, 8, 24],
        ];
        let rows: Vec<Row> = t.iter().map(|b| row(b, 85)).collect();
        let g = groups(&rows, 16, 16);
        assert_eq!(g, vec![Group { rows: vec![0, 1, 2], shared: 80 }, Group { rows: vec![3, 4], shared: 80 }]);
    }

    #[test]
    fn rows_of_a_group_need_not_be_neighbours_in_the_batch() {
        let (a, b, c, d) = ([0, 1, 9], [5, 6, 10], [0, 1, 11], [5, 6, 12]);
        let rows = [row(&a, 40), row(&b, 40), row(&c, 40), row(&d, 40)];
        let g = groups(&rows, 16, 16);
        assert_eq!(g, vec![Group { rows: vec![0, 2], shared: 32 }, Group { rows: vec![1, 3], shared: 32 }]);
    }

    #[test]
    fn a_group_spares_its_prefix_once_per_row_after_the_first() {
        let g = [Group { rows: vec![0, 1, 2], shared: 80 }, Group { rows: vec![3, 4], shared: 32 }];
        assert_eq!(saved_positions(&g), 2 * 80 + 32);
    }

    #[test]
    fn a_lone_row_forms_no_group() {
        let a = [0, 1, 2];
        assert!(groups(&[row(&a, 40)], 16, 16).is_empty());
    }
}
