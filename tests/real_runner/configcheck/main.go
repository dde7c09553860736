// configcheck decodes each config.toml named on its command line as gitlab-runner does
// (common/config.go LoadConfig: toml.DecodeFile into its Config) and fails, naming the file,
// on a decoding error or on any key the types do not take (MetaData.Undecoded), which the real
// runner would silently ignore: a key the agent writes must be one gitlab-runner reads.
package main

import (
	"fmt"
	"os"

	"github.com/BurntSushi/toml"
)

// StringOrArray takes a string or an array of strings, as gitlab-runner's type of that name does
// (common/config.go, its UnmarshalTOML).
type StringOrArray []string

func (s *StringOrArray) UnmarshalTOML(data any) error {
	switch v := data.(type) {
	case string:
		*s = StringOrArray{v}
		return nil
	case []any:
		out := make(StringOrArray, 0, len(v))
		for _, item := range v {
			text, ok := item.(string)
			if !ok {
				return fmt.Errorf("cannot load value of type %T into a StringOrArray", item)
			}
			out = append(out, text)
		}
		*s = out
		return nil
	}
	return fmt.Errorf("cannot load value of type %T into a StringOrArray", data)
}

func main() {
	failed := false
	for _, path := range os.Args[1:] {
		var config Tconfig
		md, err := toml.DecodeFile(path, &config)
		if err != nil {
			fmt.Printf("%s: decoding configuration file: %v\n", path, err)
			failed = true
			continue
		}
		if undecoded := md.Undecoded(); len(undecoded) > 0 {
			fmt.Printf("%s: keys gitlab-runner does not read: %v\n", path, undecoded)
			failed = true
			continue
		}
		fmt.Printf("%s: ok\n", path)
	}
	if failed {
		os.Exit(1)
	}
}
