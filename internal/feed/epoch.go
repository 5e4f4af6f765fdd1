package feed

import "crypto/rand"

// NewEpoch returns a random 10-character [a-z0-9] feed epoch, for a reset of the feed
// (UPDATE tocsin.feed_state SET epoch): every cursor of the old one gets 410.
func NewEpoch() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}
