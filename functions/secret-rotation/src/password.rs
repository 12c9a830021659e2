//! New passwords, drawn in the function from the operating system's generator (through
//! `rand`'s thread-local CSPRNG) instead of a GetRandomPassword call: the same rules as that
//! call with `RequireEachIncludedType` (printable ASCII without space, the excluded characters
//! left out, at least one character of every class that has any left), one network round trip
//! and one IAM action fewer per rotation.

use rand::seq::IndexedRandom;
use rand::{CryptoRng, Rng};

use crate::secret::Password;

/// The character classes GetRandomPassword knows (its space class is never included here).
const CLASSES: [fn(&char) -> bool; 4] = [
    char::is_ascii_lowercase,
    char::is_ascii_uppercase,
    char::is_ascii_digit,
    char::is_ascii_punctuation,
];

/// What a new password is drawn from, and how long it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    alphabet: Vec<char>,
    /// The classes (indices into [`CLASSES`]) with a character left: each must appear.
    required: Vec<usize>,
    length: usize,
}

impl Policy {
    /// The policy for `length` characters without those in `exclude`; `None` when `exclude`
    /// leaves no printable character.
    pub fn new(exclude: &str, length: u32) -> Option<Policy> {
        let alphabet: Vec<char> = (0x21u8..=0x7e)
            .map(char::from)
            .filter(|c| !exclude.contains(*c))
            .collect();
        let required = (0..CLASSES.len())
            .filter(|&i| alphabet.iter().any(CLASSES[i]))
            .collect();
        (!alphabet.is_empty()).then_some(Policy {
            alphabet,
            required,
            length: usize::try_from(length).ok()?,
        })
    }

    /// A password: every character drawn uniformly from the alphabet, drawn again until each
    /// class with a character left appears (so every such password is equally likely).
    pub fn generate<R: Rng + CryptoRng>(&self, rng: &mut R) -> Password {
        loop {
            let candidate: String = (0..self.length)
                .filter_map(|_| self.alphabet.choose(rng).copied())
                .collect();
            if self
                .required
                .iter()
                .all(|&i| candidate.chars().any(|c| CLASSES[i](&c)))
            {
                return Password::new(candidate);
            }
        }
    }

    /// A password from the thread's CSPRNG (`rand::rng()`, seeded from the operating system).
    pub fn draw(&self) -> Password {
        self.generate(&mut rand::rng())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::DEFAULT_EXCLUDE_CHARACTERS;
    use proptest::prelude::{prop_assert, prop_assert_eq, proptest};

    #[test]
    fn the_default_draws_letters_digits_and_one_of_dot_or_underscore() {
        let policy = Policy::new(DEFAULT_EXCLUDE_CHARACTERS, 32).unwrap();
        for _ in 0..200 {
            let p = policy.draw();
            let p = p.expose();
            assert_eq!(p.len(), 32);
            assert!(
                p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
            );
            assert!(p.chars().any(|c| c == '.' || c == '_'), "{p}");
            assert!(p.chars().any(|c| c.is_ascii_lowercase()));
            assert!(p.chars().any(|c| c.is_ascii_uppercase()));
            assert!(p.chars().any(|c| c.is_ascii_digit()));
        }
    }

    #[test]
    fn a_class_emptied_by_the_exclusions_is_not_required() {
        let digits_and_punctuation: String = (0x21u8..=0x7e)
            .map(char::from)
            .filter(|c| c.is_ascii_digit() || c.is_ascii_punctuation())
            .collect();
        let policy = Policy::new(&digits_and_punctuation, 16).unwrap();
        let p = policy.draw();
        assert!(p.expose().chars().all(|c| c.is_ascii_alphabetic()));
        let everything: String = (0x21u8..=0x7e).map(char::from).collect();
        assert_eq!(Policy::new(&everything, 16), None);
    }

    #[test]
    fn draws_differ() {
        let policy = Policy::new("", 16).unwrap();
        let drawn: std::collections::HashSet<String> = (0..100)
            .map(|_| policy.draw().expose().to_string())
            .collect();
        assert_eq!(drawn.len(), 100);
    }

    proptest! {
        /// Whatever is excluded, a password has the length asked for, no excluded character,
        /// no space, and a character of every class that has any left.
        #[test]
        fn every_password_keeps_the_rules(
            exclude in proptest::collection::vec(0x21u8..=0x7e, 0..90),
            length in 16u32..=64,
        ) {
            let exclude: String = exclude.into_iter().map(char::from).collect();
            let Some(policy) = Policy::new(&exclude, length) else {
                prop_assert_eq!(exclude.chars().collect::<std::collections::BTreeSet<_>>().len(), 94);
                return Ok(());
            };
            let p = policy.draw();
            let p = p.expose();
            prop_assert_eq!(p.chars().count(), length as usize);
            prop_assert!(p.chars().all(|c| c.is_ascii_graphic() && !exclude.contains(c)));
            for class in CLASSES {
                let left = (0x21u8..=0x7e).map(char::from).any(|c| class(&c) && !exclude.contains(c));
                prop_assert_eq!(p.chars().any(|c| class(&c)), left);
            }
        }
    }
}
