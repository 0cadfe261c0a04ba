// Command go_peer runs moby/spdystream's framer, the SPDY implementation that
// Kubernetes peers use, against crisp's codec. It is a manual interop check,
// not part of `bazel test` (CI machines need not have Go):
//
//	capture: writes a fixed frame sequence with spdystream and prints it as hex
//	         (the vector in go_vector_test.cc was made this way);
//	read:    decodes frames from stdin with spdystream and prints them, so that
//	         crisp's encoder output can be checked by the real peer:
//	         bazel-bin/test/codec/spdy/encode_sample | go run main.go read
//
// Debian: apt-get install golang-go golang-github-docker-spdystream-dev, then
// GO111MODULE=off GOPATH=/usr/share/gocode go run main.go capture|read
package main

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"

	"github.com/moby/spdystream/spdy"
)

func capture() error {
	var wire bytes.Buffer
	framer, err := spdy.NewFramer(&wire, &wire)
	if err != nil {
		return err
	}
	// What client-go sends when it opens the error and stdin streams of an exec.
	errHeaders := http.Header{}
	errHeaders.Set("streamType", "error")
	if err := framer.WriteFrame(&spdy.SynStreamFrame{StreamId: 1, Headers: errHeaders}); err != nil {
		return err
	}
	stdinHeaders := http.Header{}
	stdinHeaders.Set("streamType", "stdin")
	if err := framer.WriteFrame(&spdy.SynStreamFrame{StreamId: 3, Headers: stdinHeaders}); err != nil {
		return err
	}
	// One name with two values travels NUL-separated in one pair.
	replyHeaders := http.Header{}
	replyHeaders.Add("X-Multi", "one")
	replyHeaders.Add("X-Multi", "two")
	if err := framer.WriteFrame(&spdy.SynReplyFrame{CFHeader: spdy.ControlFrameHeader{Flags: spdy.ControlFlagFin}, StreamId: 2, Headers: replyHeaders}); err != nil {
		return err
	}
	fmt.Println(hex.EncodeToString(wire.Bytes()))
	return nil
}

func formatHeaders(h http.Header) string {
	var names []string
	for name := range h {
		names = append(names, name)
	}
	sort.Strings(names)
	var parts []string
	for _, name := range names {
		parts = append(parts, fmt.Sprintf("%s=%q", name, h[name]))
	}
	return strings.Join(parts, " ")
}

func read() error {
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	framer, err := spdy.NewFramer(io.Discard, bytes.NewReader(input))
	if err != nil {
		return err
	}
	for {
		frame, err := framer.ReadFrame()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		switch f := frame.(type) {
		case *spdy.SynStreamFrame:
			fmt.Printf("SYN_STREAM %d assoc=%d pri=%d flags=%d %s\n", f.StreamId, f.AssociatedToStreamId, f.Priority, f.CFHeader.Flags, formatHeaders(f.Headers))
		case *spdy.SynReplyFrame:
			fmt.Printf("SYN_REPLY %d flags=%d %s\n", f.StreamId, f.CFHeader.Flags, formatHeaders(f.Headers))
		case *spdy.HeadersFrame:
			fmt.Printf("HEADERS %d flags=%d %s\n", f.StreamId, f.CFHeader.Flags, formatHeaders(f.Headers))
		case *spdy.DataFrame:
			fmt.Printf("DATA %d flags=%d len=%d\n", f.StreamId, f.Flags, len(f.Data))
		case *spdy.RstStreamFrame:
			fmt.Printf("RST_STREAM %d status=%d\n", f.StreamId, f.Status)
		case *spdy.SettingsFrame:
			fmt.Printf("SETTINGS flags=%d %v\n", f.CFHeader.Flags, f.FlagIdValues)
		case *spdy.PingFrame:
			fmt.Printf("PING %d\n", f.Id)
		case *spdy.GoAwayFrame:
			fmt.Printf("GOAWAY last=%d status=%d\n", f.LastGoodStreamId, f.Status)
		case *spdy.WindowUpdateFrame:
			fmt.Printf("WINDOW_UPDATE %d delta=%d\n", f.StreamId, f.DeltaWindowSize)
		default:
			fmt.Printf("OTHER %T\n", f)
		}
	}
}

func main() {
	var err error
	if len(os.Args) == 2 && os.Args[1] == "capture" {
		err = capture()
	} else if len(os.Args) == 2 && os.Args[1] == "read" {
		err = read()
	} else {
		err = fmt.Errorf("usage: go_peer capture|read")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "go_peer:", err)
		os.Exit(1)
	}
}
