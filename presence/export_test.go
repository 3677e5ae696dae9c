package presence

import "github.com/redis/go-redis/v9"

// Exported for the external tests of this package.
var (
	MembersKey = membersKey
	ExpiryKey  = expiryKey
)

// AddHook adds h to the store's Redis client, to observe its commands.
func (r *Redis) AddHook(h redis.Hook) { r.client.AddHook(h) }
