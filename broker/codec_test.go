package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"testing"
)

func TestCodecRoundTrip(t *testing.T) {
	t.Parallel()
	pubs := []Publication{
		{},
		{Event: "e", Data: json.RawMessage(`{"a":1}`), TS: 1},
		{Event: "UPDATE", From: "u:1", TS: -1, Data: json.RawMessage(` [ 1 , 2 ] `), Old: json.RawMessage(`{}`)},
		{Event: "DELETE", TS: 5, Data: json.RawMessage(`{"id":1}`), Truncated: true},
		{Event: "big", TS: 1<<62 + 3, Data: json.RawMessage(bytes.Repeat([]byte("x"), 1<<17))},
	}
	for i, p := range pubs {
		body := appendPublication(nil, p)
		if len(body) > publicationSize(p) {
			t.Errorf("#%d: body of %d bytes, bound %d", i, len(body), publicationSize(p))
		}
		payload := "0123456789abcdef:" + strconv.Itoa(i+1) + ":" + string(body)
		pos, got, err := decodePayload(payload)
		if err != nil {
			t.Fatalf("#%d: %v", i, err)
		}
		if pos != (Position{Epoch: "0123456789abcdef", Seq: uint64(i + 1)}) {
			t.Errorf("#%d: position %+v", i, pos)
		}
		if got.Event != p.Event || got.From != p.From || got.TS != p.TS || got.Truncated != p.Truncated ||
			!bytes.Equal(got.Data, p.Data) || !bytes.Equal(got.Old, p.Old) {
			t.Errorf("#%d: got %+v, want %+v", i, got, p)
		}
		// Data and Old must not alias each other.
		if len(got.Data) > 0 && cap(got.Data) != len(got.Data) {
			t.Errorf("#%d: Data has spare capacity %d: appending to it would overwrite Old", i, cap(got.Data))
		}
	}
}

func TestDecodePayloadRejectsMalformed(t *testing.T) {
	t.Parallel()
	good := string(appendPublication(nil, Publication{Event: "e", Data: json.RawMessage(`{}`)}))
	for _, s := range []string{
		"", "epoch", "epoch:1", ":1:" + good, "e:0:" + good, "e:x:" + good, "e:1:", "e:1:\x02",
		"e:1:" + good[:len(good)-1], "e:1:" + good + "extra", "e:1:\x02\x80" + good[2:], "e:1:\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
	} {
		if _, _, err := decodePayload(s); !errors.Is(err, errMalformed) {
			t.Errorf("decodePayload(%q) = %v, want errMalformed", s, err)
		}
	}
}

func FuzzDecodePayload(f *testing.F) {
	f.Add("abc:1:" + string(appendPublication(nil, Publication{Event: "e", Data: json.RawMessage(`{}`), Old: json.RawMessage(`[]`)})))
	f.Add("abc:2:\x01")
	f.Fuzz(func(t *testing.T, s string) {
		_, pub, err := decodePayload(s) // must not panic
		if err != nil {
			return
		}
		// What decodes survives a re-encoding unchanged.
		_, again, err := decodePayload("e:1:" + string(appendPublication(nil, pub)))
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", pub, err)
		}
		if again.Event != pub.Event || again.From != pub.From || again.TS != pub.TS ||
			!bytes.Equal(again.Data, pub.Data) || !bytes.Equal(again.Old, pub.Old) {
			t.Fatalf("re-encoding %+v gave %+v", pub, again)
		}
	})
}

// A body written by version 1 (before the flags byte) still decodes, so
// that history written by an older node stays readable.
func TestDecodeVersion1(t *testing.T) {
	t.Parallel()
	v2 := appendPublication(nil, Publication{Event: "e", TS: 7, Data: json.RawMessage(`{"a":1}`)})
	v1 := append([]byte{1}, v2[2:]...)
	got, err := decodePublication(string(v1))
	if err != nil {
		t.Fatal(err)
	}
	if got.Event != "e" || got.TS != 7 || string(got.Data) != `{"a":1}` || got.Truncated {
		t.Errorf("got %+v", got)
	}
}
