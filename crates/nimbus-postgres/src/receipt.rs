//! A PostgreSQL queue receipt: `<id>:<nonce>`, the row and the nonce its `receipt` column was
//! given by the receive that made it (a later receive or a release changes the nonce, so an old
//! receipt no longer names the row), and the rows an ack or a release names.

use std::collections::{HashMap, HashSet};

use nimbus_sources::{Receipt, SourceError};

/// The receipt of row `id` received with `nonce`.
pub(crate) fn receipt_of(id: i64, nonce: i64) -> Receipt {
    Receipt::token(format!("{id}:{nonce}"))
}

/// The row and nonce a receipt names; [`SourceError::UnknownReceipt`] if it is not one. A
/// receive's nonce is at least 1: rows not received (sent, delayed, released) carry 0, which
/// no receipt may name.
pub(crate) fn parse(receipt: &Receipt) -> Result<(i64, i64), SourceError> {
    let token = receipt.as_token().ok_or(SourceError::UnknownReceipt)?;
    let (id, nonce) = token.split_once(':').ok_or(SourceError::UnknownReceipt)?;
    let id = id.parse().map_err(|_| SourceError::UnknownReceipt)?;
    match nonce.parse() {
        Ok(nonce) if nonce >= 1 => Ok((id, nonce)),
        _ => Err(SourceError::UnknownReceipt),
    }
}

/// The rows an ack or a release names: each `(id, nonce)` once, split into the two arrays a
/// statement takes, and which of them each receipt named (`None`: malformed).
pub(crate) struct Named {
    pub(crate) ids: Vec<i64>,
    pub(crate) nonces: Vec<i64>,
    of: Vec<Option<usize>>,
}

impl Named {
    pub(crate) fn of(receipts: &[Receipt]) -> Self {
        let mut seen: HashMap<(i64, i64), usize> = HashMap::with_capacity(receipts.len());
        let (mut ids, mut nonces) = (Vec::new(), Vec::new());
        let of = receipts
            .iter()
            .map(|r| {
                let row = parse(r).ok()?;
                Some(*seen.entry(row).or_insert_with(|| {
                    ids.push(row.0);
                    nonces.push(row.1);
                    ids.len() - 1
                }))
            })
            .collect();
        Self { ids, nonces, of }
    }

    /// The nonce every named row shares, if they share one (receipts of one receive do).
    pub(crate) fn one_nonce(&self) -> Option<i64> {
        let (first, rest) = self.nonces.split_first()?;
        rest.iter().all(|n| n == first).then_some(*first)
    }

    /// The positions of the receipts refused, given the rows the statement changed.
    pub(crate) fn refused(&self, rows: &[tokio_postgres::Row]) -> Vec<usize> {
        let done: HashSet<(i64, i64)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
        self.of
            .iter()
            .enumerate()
            .filter(|(_, named)| {
                named.is_none_or(|n| !done.contains(&(self.ids[n], self.nonces[n])))
            })
            .map(|(at, _)| at)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_row_is_named_once_and_malformed_receipts_are_refused() {
        let named = Named::of(&[
            receipt_of(7, 1),
            Receipt::token("7"),
            receipt_of(8, 2),
            receipt_of(7, 1),
            Receipt::from_parts(1, 2),
        ]);
        assert_eq!(
            (named.ids.clone(), named.nonces.clone()),
            (vec![7, 8], vec![1, 2])
        );
        assert_eq!(named.one_nonce(), None);
        let one = Named::of(&[receipt_of(7, 3), receipt_of(8, 3)]);
        assert_eq!(one.one_nonce(), Some(3));
        assert_eq!(Named::of(&[Receipt::token("x")]).one_nonce(), None);
        assert_eq!(parse(&receipt_of(7, 1)), Ok((7, 1)));
        assert_eq!(
            parse(&Receipt::token("7:x")),
            Err(SourceError::UnknownReceipt)
        );
        for no_receive in ["7:0", "7:-3"] {
            assert_eq!(
                parse(&Receipt::token(no_receive)),
                Err(SourceError::UnknownReceipt)
            );
        }
    }
}
